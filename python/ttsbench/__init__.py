"""ttsbench — benchmark self-hosted TTS engines, decide by pre-committed rules, drill failover."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ttsbench")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
