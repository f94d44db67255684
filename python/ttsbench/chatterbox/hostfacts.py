"""Host facts and process memory for the in-process Chatterbox runner (torch imported lazily)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any


def _nvidia_smi(args: list[str]) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def host_facts(name: str, device: str) -> dict[str, Any]:
    """The ``host`` block of a system in results.json (docs/run-folder.md)."""
    import torch

    facts: dict[str, Any] = {
        "name": name,
        "arch": platform.machine(),
        "gpu_name": None,
        "compute_capability": None,
        "driver": None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        major, minor = torch.cuda.get_device_capability(dev)
        facts["gpu_name"] = torch.cuda.get_device_name(dev)
        facts["compute_capability"] = f"{major}.{minor}"
        out = _nvidia_smi(["--query-gpu=driver_version", "--format=csv,noheader"])
        if out and out.strip():
            facts["driver"] = out.strip().splitlines()[0].strip()
    return facts


def vm_hwm_mb(pid: int | None = None) -> float | None:
    """Peak resident set size (VmHWM) of a process in MiB, from /proc."""
    path = f"/proc/{pid or os.getpid()}/status"
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def parse_compute_apps(text: str, pid: int) -> tuple[float | None, bool]:
    """Parse ``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits``.

    Returns (MiB used by ``pid`` or None, whether nvidia-smi said ``[N/A]`` for it — GB10 unified memory).
    """
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) != pid:
            continue
        value = parts[1]
        if value.upper() in ("[N/A]", "N/A", "[NOT SUPPORTED]"):
            return None, True
        try:
            return float(value), False
        except ValueError:
            return None, True
    return None, False


def process_memory_mb(pid: int | None = None) -> tuple[float | None, str]:
    """This process's memory as nvidia-smi reports it; falls back to peak RSS (VmHWM) when nvidia-smi
    is absent, does not list the process, or prints ``[N/A]``. Returns (MiB, source)."""
    pid = pid or os.getpid()
    out = _nvidia_smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    if out is not None:
        mb, na = parse_compute_apps(out, pid)
        if mb is not None:
            return mb, "nvidia-smi"
        if na:
            return vm_hwm_mb(pid), "vmhwm (nvidia-smi [N/A])"
    return vm_hwm_mb(pid), "vmhwm"
