"""roles/vllm_omni against a local fixture git repo (tests/fixtures/vllm_omni_fixture, not vllm-omni)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from roles_helpers import ROOT
from ttsbench.runner import run_playbook

PLAYBOOK = ROOT / "tests" / "playbooks" / "vllm_omni_install.yml"


def _load_builder():
    spec = importlib.util.spec_from_file_location("fixture_repo", ROOT / "tests/fixtures/vllm_omni_fixture_repo.py")
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
        # the fixture's stand-in `vllm` (serve flags of the real vllm, nothing else); no CUDA, no weights here
        "vllm_omni_vllm_source": "{{ vllm_omni_src_dir }}/vllm_standin",
        "vllm_omni_require_cuda": False,
        "vllm_omni_require_weights": False,
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
    inv = _inventory(
        tmp_path, fixture_repo["repo"], vllm_omni_version="main", vllm_omni_cherry_picks=["refs/pull/2/head"]
    )
    res = run_playbook(PLAYBOOK, inventory=inv)
    assert not res.ok
    msg = " ".join(res.failure_messages())
    assert "README.md" in msg and "vllm_omni_cherry_picks" in msg
    src = tmp_path / "host" / "vllm_omni" / "src"
    assert not (src / ".git" / "CHERRY_PICK_HEAD").exists()
    assert not (tmp_path / "host" / "vllm_omni" / "venv").exists(), "nothing may be installed after a bad pick"


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
        vllm_omni_cherry_picks=[fixture_repo["fix"], fixture_repo["multi_pr"]],
        vllm_omni_model="standin",
        vllm_omni_stage_overrides={"0": {"gpu_memory_utilization": 0.25, "max_num_seqs": 1}},
    )
    res = run_playbook(PLAYBOOK, inventory=inv)
    assert res.ok, res.failure_messages()
    build = res.task_results("Report the resolved source")[0]["res"]["msg"]
    assert build["sha"] == fixture_repo["base"]
    assert build["cherry_picks"] == [fixture_repo["fix"], fixture_repo["multi"][-1]]
    # a plain SHA applies that commit; a PR ref applies all the PR's commits (merge-base..head), oldest first
    assert build["cherry_picks_applied"] == [fixture_repo["fix"], *fixture_repo["multi"]]
    extra = (tmp_path / "host" / "vllm_omni" / "src" / "serve_fixture" / "extra.py").read_text()
    assert "EXTRA_A" in extra and "EXTRA_B" in extra
    venv_py = tmp_path / "host" / "vllm_omni" / "venv" / "bin" / "python"
    out = subprocess.run(
        [str(venv_py), "-c", "import serve_fixture; print(serve_fixture.PATCH_LEVEL)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "patched"
    # what the role read from the installed (fixture of the) release and built the command from
    assert build["versions"]["vllm_omni"] == fixture_repo["version"] and build["versions"]["vllm"]
    assert build["script"] == "vllm-omni" and build["config_style"] == "deploy"
    argv = build["serve_argv"]
    assert argv[0].endswith("/venv/bin/vllm-omni") and argv[1:4] == ["serve", "standin", "--omni"]
    assert argv[argv.index("--deploy-config") + 1].endswith("vllm_omni/deploy/voxtral_tts.yaml")
    assert build["stages"]["0"] == {"gpu_memory_utilization": 0.25, "max_num_seqs": 1}
    assert json.loads(argv[argv.index("--stage-overrides") + 1]) == {
        "0": {"gpu_memory_utilization": 0.25, "max_num_seqs": 1}
    }
    again = run_playbook(PLAYBOOK, inventory=inv)
    assert again.ok and again.changed == 0, again.changed_by_host()


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        # cheap cases only (they stop before pip runs); unknown flags / configs: tests/test_vllm_omni_contract.py
        ({"vllm_omni_vllm_source": "/nowhere/vllm-0.30.0-cp38-abi3-manylinux_2_28_s390x.whl"}, "vllm_omni_vllm_source"),
        ({"vllm_omni_vllm_source": "", "vllm_omni_version": "main"}, "vllm_omni_vllm_source"),
    ],
)
def test_bad_input_stops_naming_the_variable(tmp_path, fixture_repo, extra, variable):
    inv = _inventory(tmp_path, fixture_repo["repo"], **extra)
    res = run_playbook(PLAYBOOK, inventory=inv)
    assert not res.ok
    assert any(variable in m for m in res.failure_messages()), res.failure_messages()
    assert not (tmp_path / "host" / "vllm_omni" / "venv").exists(), "nothing may be installed after bad input"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"vllm_omni_require_cuda": True}, "vllm_omni_torch_source"),
        ({"vllm_omni_require_weights": True}, "download it first"),
        ({"vllm_omni_port": "LISTENING"}, "set vllm_omni_port"),
    ],
)
def test_preflight_stops_before_anything_is_paused(tmp_path, extra, needle):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if extra.get("vllm_omni_port") == "LISTENING":
            extra = {"vllm_omni_port": busy.getsockname()[1]}
        inv = _inventory(
            tmp_path,
            "unused",
            vllm_omni_hf_hub_dir=str(tmp_path / "empty-hub"),
            vllm_omni_model="mistralai/Voxtral-4B-TTS-2603",
            vllm_omni_health_host="127.0.0.1",
            vllm_omni_plan={"argv": []},
            vllm_omni_build={"versions": {"cuda_available": False}},
            **extra,
        )
        res = run_playbook(ROOT / "tests" / "playbooks" / "vllm_omni_preflight.yml", inventory=inv)
    assert not res.ok
    assert any(needle in m for m in res.failure_messages()), res.failure_messages()


def _tasks_in_order(playbook: Path) -> list[str]:
    """Every play's tasks in run order, imported playbooks (playbooks/common/, rehearsal/) expanded in place."""
    out: list[str] = []
    for play in yaml.safe_load(playbook.read_text()):
        imported = play.get("ansible.builtin.import_playbook")
        if imported:
            out += _tasks_in_order(playbook.parent / imported)
        else:
            out += [str(t) for t in play.get("tasks", [])]
    return out


def test_bench_voxtral_runs_the_preflight_before_pausing_gemma():
    order = _tasks_in_order(ROOT / "playbooks" / "bench-voxtral.yml")
    preflight = next(i for i, t in enumerate(order) if "'tasks_from': 'preflight.yml'" in t and "vllm_omni" in t)
    pause = next(i for i, t in enumerate(order) if "'tasks_from': 'pause.yml'" in t)
    assert preflight < pause
