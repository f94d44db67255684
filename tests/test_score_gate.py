"""roles/ttsbench_run score.yml + gate.yml with real ansible-playbook and the real ttsbench sub-commands: a failing
verdict does not stop the report, and fails the play in the post-flight gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.runner import project_root

pytestmark = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")
PLAY = """
- name: score then gate
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: score
      ansible.builtin.include_role:
        name: ttsbench_run
        tasks_from: score.yml
    - name: gate
      ansible.builtin.include_role:
        name: ttsbench_run
        tasks_from: gate.yml
"""


def play(tmp: Path, run: Path, **extra: object) -> subprocess.CompletedProcess:
    (tmp / "play.yml").write_text(PLAY)
    ev = {
        "ttsbench_run_dir": str(run),
        "ttsbench_run_python": sys.executable,
        **extra,
    }
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(project_root() / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONPATH": os.pathsep.join([str(project_root() / "python"), os.environ.get("PYTHONPATH", "")]),
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "ansible-playbook"), "-i", "localhost,", str(tmp / "play.yml"), "-e", json.dumps(ev)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_failing_verdict_fails_the_play_after_the_report(tmp_path):
    run = make_run(tmp_path, texts={"u01": "Hello there."}, kind="bench-http")  # no default rule for bench-http
    res = play(tmp_path, run)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "score / verdict / report failed" in out, out
    assert "verdict: error: no default decision rule for run kind 'bench-http'" in out, out
    assert (run / "report.html").is_file()  # the report ran although the verdict failed
