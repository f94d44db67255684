#!/usr/bin/env python3
"""Post-build check of roles/vllm_omni, run with the venv's python: import vllm and vllm_omni, report versions.

Prints one JSON line: {"vllm", "vllm_omni", "torch", "cuda", "cuda_available", "errors": {module: message}}.
Exit 0 when vllm and vllm_omni import (torch/CUDA are reported, and required by the role where it says so).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import sys


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def main() -> int:
    out: dict[str, object] = {"errors": {}}
    errors: dict[str, str] = out["errors"]  # type: ignore[assignment]
    for mod, dist in (("vllm", "vllm"), ("vllm_omni", "vllm-omni")):
        try:
            importlib.import_module(mod)
            out[mod] = _version(dist)
        except Exception as exc:
            out[mod] = None
            errors[mod] = f"{type(exc).__name__}: {exc}"[:500]
    try:
        torch = importlib.import_module("torch")
        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
        out["cuda_available"] = bool(torch.cuda.is_available())
        out["cuda_device"] = torch.cuda.get_device_name(0) if out["cuda_available"] else None
    except Exception as exc:
        out.update(torch=None, cuda=None, cuda_available=False, cuda_device=None)
        errors["torch"] = f"{type(exc).__name__}: {exc}"[:500]
    print(json.dumps(out))
    return 0 if "vllm" not in errors and "vllm_omni" not in errors else 1


if __name__ == "__main__":
    sys.exit(main())
