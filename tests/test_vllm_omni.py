"""roles/vllm_omni against a local fixture git repo (tests/fixtures/vllm_omni_fixture, not vllm-omni)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.roles_helpers import ROOT

from ttsbench.runner import run_playbook

PLAYBOOK = ROOT / "tests" / "playbooks" / "vllm_omni_install.yml"


def _load_builder():
    spec = importlib.util.spec_from_file_location(
        "fixture_repo", ROOT / "tests/fixtures/vllm_omni_fixture_repo.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fixture_repo(tmp_path_factory) -> dict[str, str]:
    """The fixture package as a git repo: main, tag v0.0.1, refs/pull/1 (fix), refs/pull/2 (conflict)."""
    return _load_builder().build(tmp_path_factory.mktemp("fixture") / "repo")


def _inventory(tmp_path: Path, repo: str, **extra) -> Path:
    hostvars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ttsbench_root": str(tmp_path / "host"),
        "ttsbench_python": "/usr/bin/python3",
        "vllm_omni_repo": repo,
        **extra,
    }
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"tts": hostvars}}}))
    return inv


def test_fixture_repo_has_the_refs_the_tests_need(fixture_repo):
    repo = fixture_repo["repo"]

    def rev(ref: str) -> str:
        return subprocess.run(
            ["git", "-C", repo, "rev-parse", ref], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert rev("refs/pull/1/head") == fixture_repo["fix"]
    assert rev("refs/pull/2/head") == fixture_repo["conflict"]
    assert rev("v0.0.1^{commit}") == fixture_repo["base"]
    assert rev("main") == fixture_repo["main"] != fixture_repo["base"]


def test_conflicting_pick_is_aborted_and_names_files(tmp_path, fixture_repo):
    inv = _inventory(tmp_path, fixture_repo["repo"], vllm_omni_cherry_picks=["refs/pull/2/head"])
    res = run_playbook(PLAYBOOK, inventory=inv)
    assert not res.ok
    msg = " ".join(res.failure_messages())
    assert "README.md" in msg and "vllm_omni_cherry_picks" in msg
    src = tmp_path / "host" / "vllm_omni" / "src"
    assert not (src / ".git" / "CHERRY_PICK_HEAD").exists()
    assert not (tmp_path / "host" / "vllm_omni" / "venv").exists(), (
        "nothing may be installed after a bad pick"
    )


def test_unknown_version_names_the_variable(tmp_path, fixture_repo):
    inv = _inventory(tmp_path, fixture_repo["repo"], vllm_omni_version="no-such-branch")
    res = run_playbook(PLAYBOOK, inventory=inv)
    assert not res.ok
    assert any("vllm_omni_version" in m for m in res.failure_messages())


def test_tag_resolves_to_its_commit_and_pick_applies(tmp_path, fixture_repo):
    inv = _inventory(
        tmp_path,
        fixture_repo["repo"],
        vllm_omni_version="v0.0.1",
        vllm_omni_cherry_picks=[fixture_repo["fix"]],
    )
    res = run_playbook(PLAYBOOK, inventory=inv)
    assert res.ok, res.failure_messages()
    build = res.task_results("Report the resolved source")[0]["res"]["msg"]
    assert build["sha"] == fixture_repo["base"]
    assert build["cherry_picks"] == [fixture_repo["fix"]]
    venv_py = tmp_path / "host" / "vllm_omni" / "venv" / "bin" / "python"
    out = subprocess.run(
        [str(venv_py), "-c", "import serve_fixture; print(serve_fixture.PATCH_LEVEL)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "patched"
    again = run_playbook(PLAYBOOK, inventory=inv)
    assert again.ok and again.changed == 0, again.changed_by_host()
