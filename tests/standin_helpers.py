"""Start stand-in servers and ttsbench as subprocesses for tests (and benchmarks)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from ttsbench.httpserve import free_port


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaped."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def realtime_prefix() -> list[str]:
    """``chrt -f 50`` when allowed: other jobs on a 2-core box otherwise add scheduler delays of ms."""
    chrt = shutil.which("chrt")
    if chrt and subprocess.run([chrt, "-f", "50", "true"], capture_output=True).returncode == 0:
        return [chrt, "-f", "50"]
    return []


def ttsbench_cmd(*args: str, realtime: bool = False) -> list[str]:
    return [*(realtime_prefix() if realtime else []), sys.executable, "-m", "ttsbench", *args]


@contextlib.contextmanager
def standin(kind: str, *args: str, realtime: bool = False) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        ttsbench_cmd("standin", kind, "--port", str(port), *args, realtime=realtime),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a readiness wait, not a timing: the other test lane loads the CPU
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"standin {kind} did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(proc, 5)
        proc.stderr.close()
