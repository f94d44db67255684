"""``ttsbench doctor -i``: every host checked read-only, one table with what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from standin_helpers import standin
from ttsbench.hostdoctor import evaluate
from ttsbench.httpserve import free_port

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "host": "titan",
    "groups": ["gpu", "tts_standby"],
    "user": "ops",
    "uid": 1000,
    "arch": "aarch64",
    "systemd": True,
    "become_ok": False,
    "become_error": "sudo: a password is required",
    "docker": None,
    "gpu": ["NVIDIA GB10, 12.1, 580.95", "13.0"],
    "disk_free_kb": 1500 * 1048576,
    "disk_path": "/opt",
    "disk_writable": False,
    "min_free_gb": 20,
    "root_become": True,
    "voxtral": ["7800000", "/hf/hub/models--x"],
    "ports": [8772, 8004],
    "ports_busy": [8004],
    "services": [{"backend": "docker", "container": "vllm-gemma4"}],
    "llm_service_error": None,
    "primary_service_error": None,
    "primary_url": None,
}


def test_findings_name_what_to_fix():
    f = {x.check: x for x in evaluate(BASE)}
    assert f["become"].ok is False and "passwordless sudo" in f["become"].fix  # docker backend needs root here
    assert f["gpu"].ok and "sm_121" in f["gpu"].detail and "CUDA 13.0" in f["gpu"].detail
    assert f["disk"].ok and f["voxtral weights"].ok
    assert f["ports"].ok is False and "busy: [8004]" in f["ports"].detail
    assert f["LLM service"].ok and "vllm-gemma4" in f["LLM service"].detail
    # a docker-group user with a user unit needs no sudo: the failed sudo is only information
    g = {
        x.check: x
        for x in evaluate(
            {**BASE, "root_become": False, "services": [{"backend": "docker", "container": "c", "become": False}]}
        )
    }
    assert g["become"].ok is None


def test_watchdog_firing_and_stale_lock_are_reported():
    fired = {
        "run_id": "bench-voxtral-1",
        "fired_at": "2026-12-01T10:00:00Z",
        "reason": "lease not renewed for 61 s",
        "outcome": "failed",
        "attempts": [{"rc": 1}, {"rc": 1}, {"rc": 1}],
    }
    lock = {"run_id": "bench-voxtral-2", "age_s": 30.0, "pid": 4242, "owner_alive": False}
    f = {
        x.check: x
        for x in evaluate(
            {**BASE, "watchdog": {"last_firing": fired, "lock": lock, "state_dir": "/srv/ttsbench/gemma_guard"}}
        )
    }
    assert f["llm watchdog"].ok is False and "bench-voxtral-1" in f["llm watchdog"].detail
    assert "failed after 3 start attempt(s)" in f["llm watchdog"].detail
    assert "/srv/ttsbench/gemma_guard/watchdog.log" in f["llm watchdog"].fix
    assert f["llm paused"].ok is False and "stale lock" in f["llm paused"].detail
    ok = {
        x.check: x
        for x in evaluate(
            {
                **BASE,
                "watchdog": {"last_firing": {**fired, "outcome": "resumed"}, "lock": {**lock, "owner_alive": True}},
            }
        )
    }
    assert ok["llm watchdog"].ok is None and "resumed after 3" in ok["llm watchdog"].detail
    assert ok["llm paused"].ok is None and "is armed" in ok["llm paused"].detail
    assert "llm watchdog" not in {x.check for x in evaluate(BASE)}


@pytest.mark.timeout(300)
def test_doctor_checks_hosts_without_changing_them(tmp_path):
    root = tmp_path / "not-made"  # ttsbench_root that does not exist: the doctor must not create it
    port = free_port()
    with standin("tts", "--api", "text-json") as url:
        inv = {
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "ttsbench_root": str(root),
                    "ttsbench_run_min_free_gb": 1,
                },
                "children": {
                    "gpu": {
                        "hosts": {
                            "titan": {
                                "gemma_guard_backend": "systemd",
                                "gemma_guard_unit": "no-such-llm.service",
                                "vllm_omni_port": port,
                            }
                        }
                    },
                    "tts_primary": {
                        "hosts": {
                            "panda": {
                                "failover_primary_url": url,
                                "failover_primary_request_template": str(
                                    ROOT / "inventory/example-homelab/templates" / "panda-tts.yml"
                                ),
                                "failover_primary_service": {
                                    "backend": "command",
                                    "start": "false",
                                    "stop": "false",
                                    "status": "false",
                                },
                            }
                        }
                    },
                },
            }
        }
        (tmp_path / "inv.yml").write_text(yaml.safe_dump(inv))
        r = subprocess.run(
            [sys.executable, "-m", "ttsbench", "doctor", "-i", str(tmp_path / "inv.yml")],
            capture_output=True,
            text=True,
            timeout=280,
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "250", "TTSBENCH_HOME": str(ROOT)},
        )
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    rows = [line for line in out.splitlines() if line.startswith("│")]
    primary = next(x for x in rows if "primary TTS " in x and "panda-fastapi" in x)
    assert "│ ok " in primary, primary
    llm = next(x for x in rows if "LLM service" in x)
    assert "FIX" in llm and "no-such-llm.service" in llm, llm
    assert "gemma_guard_unit" in out
    assert "titan/LLM service" in out
    assert not root.exists()
