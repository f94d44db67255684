"""Fetch registry packages for contract reading, cached under ~/.cache/ttsbench/contracts/ keyed on version.

vllm-omni wheels are small (2-8 MB): ``pip download --no-deps``. vllm wheels are 250-430 MB, so only the few
files a contract needs are read out of the wheel on the registry with HTTP range requests (the zip's central
directory, then each member; about 1 MB in all); zipfile checks each member's CRC. The wheel's sha256 as the
registry's index states it is recorded next to the files.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

INDEX = "https://pypi.org/simple"
CACHE = Path(os.environ.get("TTSBENCH_CONTRACT_CACHE", Path.home() / ".cache" / "ttsbench" / "contracts"))


class RegistryError(RuntimeError):
    """The registry could not be read (no network, no such version)."""


def _hash_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def unpacked_wheel(dist: str, version: str, cache: Path = CACHE) -> tuple[Path, dict[str, str]]:
    """Download ``dist==version`` as a wheel (no dependencies), unpack it; return (folder, {wheel, sha256})."""
    dest = cache / f"{dist}-{version}"
    meta_file = dest / "wheel.json"
    if meta_file.is_file():
        return dest / "tree", json.loads(meta_file.read_text())
    dl = cache / "downloads" / f"{dist}-{version}"
    dl.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(dl),
            f"{dist}=={version}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(dl.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RegistryError(f"pip download {dist}=={version} failed: {proc.stderr.strip()[-400:]}")
    tree = dest / "tree"
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(tree)
    meta = {"wheel": wheels[0].name, "sha256": _hash_file(wheels[0])}
    meta_file.write_text(json.dumps(meta))
    wheels[0].unlink()  # the unpacked tree is what is read; keep the cache small
    return tree, meta


class _HttpRange(io.RawIOBase):
    """A seekable read-only file over HTTP range requests."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.pos, self.fetched = url, size, 0, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{self.pos + n - 1}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = resp.read()
        buf[: len(data)] = data
        self.pos += len(data)
        self.fetched += len(data)
        return len(data)


def _index_files(dist: str) -> list[dict]:
    req = urllib.request.Request(f"{INDEX}/{dist}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)["files"]
    except OSError as exc:
        raise RegistryError(f"cannot read the registry index of {dist}: {exc}") from exc


def wheel_members(
    dist: str, version: str, want: tuple[str, ...], platform: str = "x86_64", cache: Path = CACHE
) -> tuple[Path, dict[str, str]]:
    """Read only the members whose path contains one of ``want`` (plus *.dist-info/ files) from the registry's
    ``dist==version`` wheel for ``platform``; return (folder, {wheel, sha256, fetched_bytes})."""
    dest = cache / f"{dist}-{version}-members"
    meta_file = dest / "wheel.json"
    if meta_file.is_file():
        return dest / "tree", json.loads(meta_file.read_text())
    prefix = f"{dist.replace('-', '_')}-{version}-"
    files = [
        f
        for f in _index_files(dist)
        if f["filename"].startswith(prefix) and f["filename"].endswith(".whl") and platform in f["filename"]
    ]
    if not files:
        raise RegistryError(f"no {platform} wheel of {dist}=={version} on the registry")
    f = files[0]
    raw = _HttpRange(f["url"], int(f["size"]))
    tree = dest / "tree"
    with zipfile.ZipFile(io.BufferedReader(raw, 1 << 16)) as zf:
        for name in zf.namelist():
            if (".dist-info/" in name and name.endswith(("entry_points.txt", "METADATA"))) or any(
                w in name for w in want
            ):
                out = tree / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(name))
    meta = {"wheel": f["filename"], "sha256": f["hashes"]["sha256"], "fetched_bytes": str(raw.fetched)}
    meta_file.write_text(json.dumps(meta))
    return tree, meta
