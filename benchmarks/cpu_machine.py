"""The machine block and the JSON writer the CPU benchmarks share (docs/benchmarks/<name>.json)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def machine(torch: Any) -> dict[str, Any]:
    return {
        "os_cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }


def write(name: str, doc: dict[str, Any]) -> Path:
    out = ROOT / "docs" / "benchmarks" / f"{name}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return out
