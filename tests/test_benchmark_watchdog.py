"""The GPU benchmark's section watchdog (benchmarks/chatterbox_http.py ``guarded``).

Device time is scarce: a section that hangs (on 2026-12-07 a ``torch.cuda.synchronize`` that never returned
took two whole device runs with nothing written) must still leave its numbers so far and where it hung."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys, time
from pathlib import Path

out = Path(sys.argv[1])
sys.path[:0] = sys.argv[2:]
import chatterbox_http as b


def hangs_after_one_number(partial):
    partial["first"] = 1.5
    time.sleep(60)  # stands for a CUDA call that never returns
    return {"never": True}


doc = {"before": "kept"}
b.guarded(doc, "ok", lambda p: {"value": 2}, out, 30)
assert json.loads(out.read_text())["ok"] == {"value": 2}  # written after each section
b.guarded(doc, "fails", lambda p: 1 / 0, out, 30)
b.guarded(doc, "hung", hangs_after_one_number, out, 1)
print("not reached")
"""


def test_a_hung_section_leaves_its_numbers_and_stacks(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-c", SCRIPT, str(out), str(ROOT / "benchmarks"), str(ROOT / "python")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "not reached" not in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["before"] == "kept" and doc["ok"] == {"value": 2}
    assert "ZeroDivisionError" in doc["fails"]["error"]  # a failing section is recorded, the run goes on
    assert doc["hung"]["first"] == 1.5 and "timed out after 1 s" in doc["hung"]["error"]
    assert "never" not in doc["hung"]
    # where it hung: every thread's stack, the sleeping line among them
    assert "still running after 1 s" in proc.stderr
    assert "hangs_after_one_number" in proc.stderr and "Thread" in proc.stderr


def test_a_section_timeout_of_zero_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "chatterbox_http.py"), "--checkpoint", str(tmp_path / "ckpt")]
    proc = subprocess.run(
        [*argv, "--out", str(out), "--section-timeout", "0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2 and "--section-timeout 0.0: give a number of seconds above 0" in proc.stderr
    assert not out.exists() and not (tmp_path / "ckpt").exists()  # nothing written, no checkpoint built


AB_SCRIPT = """
import json, sys
sys.path[:0] = sys.argv[1:]
import chatterbox_http as b


def level(fa):
    return {"p50_first_audio_ms": fa, "p50_rtf": 0.2, "throughput_audio_s_per_s": 5.0}


def never_ready():
    raise RuntimeError("server not ready after 150.0 s")


doc = {"c1": {"kept": True}}
b.run_ab(doc, "slow", "--s3-compile on", never_ready)
c4 = {**level(400.0), "throughput_audio_s_per_s": 9.0}
b.run_ab(doc, "fast", "--hift graph", lambda: {"c1": level(170.0), "c4": c4})
print(json.dumps({"doc": doc, "machine": b.machine()}))
"""


def test_an_ab_server_that_fails_is_recorded_and_the_next_one_still_runs() -> None:
    argv = [sys.executable, "-c", AB_SCRIPT, str(ROOT / "benchmarks"), str(ROOT / "python")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    doc = got["doc"]
    assert doc["c1"] == {"kept": True}
    assert doc["ab"]["slow"] == {"flags": "--s3-compile on", "error": "RuntimeError: server not ready after 150.0 s"}
    fast = doc["ab"]["fast"]
    assert fast["flags"] == "--hift graph" and fast["c1"]["p50_first_audio_ms"] == 170.0
    assert fast["c4"]["throughput_vs_c1"] == 9.0 / 5.0 and "error" not in fast
    assert got["machine"]["python"].count(".") == 2 and got["machine"]["cpus"] >= 1


SPY_SCRIPT = """
import os, sys
site, bench, py = sys.argv[1:4]
os.environ["PATH"] = "/nonexistent"
sys.path[:0] = [bench, py]
import chatterbox_http as b

print(b.find_py_spy())
sys.path.insert(0, site)
print(b.find_py_spy())
"""


def test_py_spy_is_found_beside_a_target_install(tmp_path: Path) -> None:
    """The device runs install their wheels with ``pip --target /tmp/site``: py-spy lands in /tmp/site/bin, off
    PATH. A hung server's stacks need it found there (on 2026-12-07 none were written)."""
    spy = tmp_path / "site" / "bin" / "py-spy"
    spy.parent.mkdir(parents=True)
    spy.write_text("#!/bin/sh\n")
    spy.chmod(0o755)
    argv = [sys.executable, "-c", SPY_SCRIPT, str(tmp_path / "site"), str(ROOT / "benchmarks"), str(ROOT / "python")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["None", str(spy)]


LEVEL_SCRIPT = """
import json, sys
sys.path[:0] = sys.argv[1:3]
import chatterbox_http as b

def call(t, b_, first, waits, nested=False):
    return {"t_ms": t, "ms": 100.0, "b": b_, "n": 58, "first": first, "nested": nested, "wait_ms": waits}

seen = set()
c1 = [call(1.0, 1, 1, [3.0]), call(2.0, 1, 0, [1.0])]
c4 = [call(3.0, 2, 1, [50.0, 90.0]), call(4.0, 1, 1, [20.0], nested=True), call(5.0, 3, 0, [1.0, 2.0, 4.0])]
c4[0]["decode_ms"], c4[1]["decode_ms"] = [210.0, None], [230.0]
out = [b.vocoder_level({"vocoder": {"trace": c1, "trace_max": 5}}, seen),
       b.vocoder_level({"vocoder": {"trace": c1 + c4, "trace_max": 5}}, seen),
       b.vocoder_level({}, seen)]
print(json.dumps(out))
"""


def test_each_level_gets_its_own_vocoder_calls_and_first_chunk_waits() -> None:
    """The benchmark splits the server's vocoder trace by level (a call seen in c=1 is not counted again in
    c=4) and reads each batch's first chunks as its leading rows: the wait a first chunk had is what
    --vocoder-preempt is meant to shorten."""
    argv = [sys.executable, "-c", LEVEL_SCRIPT, str(ROOT / "benchmarks"), str(ROOT / "python")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    c1, c4, none = json.loads(proc.stdout)
    assert (c1["trace_full"], c4["trace_full"]) == (False, True)
    assert c1["calls"] == 2 and c1["wait_ms"]["first"] == {"n": 1, "p50": 3.0, "p90": 3.0, "max": 3.0}
    assert c4["calls"] == 3 and c4["batches"] == {"1": 1, "2": 1, "3": 1} and c4["nested"] == 1
    assert c4["wait_ms"]["first"]["n"] == 2 and c4["wait_ms"]["first"]["max"] == 50.0
    assert c4["wait_ms"]["later"]["n"] == 4 and c4["wait_ms"]["later"]["max"] == 90.0
    assert c4["first_chunk_decode_ms"] == {"n": 2, "p50": 220.0, "p90": 228.0, "max": 230.0}
    assert (c4["first_call_ms_p50"], c4["later_call_ms_p50"]) == (100.0, 100.0) and c1["first_chunk_decode_ms"] == {
        "n": 0
    }
    assert none is None
