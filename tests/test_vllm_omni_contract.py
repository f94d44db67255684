"""Contract tests: roles/vllm_omni and the bench client against the real vllm-omni releases on the registry.

For 0.18.0, 0.20.0 and 0.30.0 the vllm-omni wheel (pip download --no-deps, 2-8 MB) and the few files of the
matching vllm wheel that define its serve flags (HTTP range reads, ~1 MB) are fetched once and cached under
~/.cache/ttsbench/contracts/. The role's serve command is rendered by the role's own helper
(roles/vllm_omni/files/serve_plan.py) reading the unpacked wheels exactly as it reads a host's venv; every flag
it emits must be one the release's argparse definitions declare. The stored contracts that the fixture and the
client use (python/ttsbench/upstream/contracts/) must equal a fresh extraction.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from roles_helpers import ROOT
from ttsbench.upstream import registry, speech_api, vllm_omni_contract

pytestmark = pytest.mark.timeout(600)

VERSIONS = vllm_omni_contract.VERSIONS
ROLE = ROOT / "roles" / "vllm_omni"


@functools.cache
def _serve_plan():
    spec = importlib.util.spec_from_file_location("serve_plan", ROLE / "files" / "serve_plan.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module", params=VERSIONS)
def release(request: pytest.FixtureRequest) -> dict:
    version = request.param
    return {
        "version": version,
        "contract": vllm_omni_contract.extract(version),
        "search": [
            str(registry.unpacked_wheel("vllm-omni", version)[0]),
            str(registry.wheel_members("vllm", version, vllm_omni_contract.VLLM_MEMBERS)[0]),
        ],
    }


def _defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def _role_argv(release: dict, tmp_path: Path, **over) -> tuple[list[str], dict]:
    d = _defaults()
    settings = {
        "model": d["vllm_omni_model"],
        "host": d["vllm_omni_host"],
        "port": d["vllm_omni_port"],
        "tokenizer_mode": d["vllm_omni_tokenizer_mode"],
        "config": d["vllm_omni_config"],
        "extra_args": d["vllm_omni_extra_args"],
        "work_dir": str(tmp_path),
        "stage_overrides": {
            "0": {"gpu_memory_utilization": 0.3, "max_num_seqs": 1},
            "1": {"gpu_memory_utilization": 0.05},
        },
        **over,
    }
    sp = _serve_plan()
    return sp.build_argv(sp.read_layout(release["search"]), settings, "/venv/bin")


def test_stored_contract_equals_the_registry_package(release: dict) -> None:
    stored = speech_api.load_contract(release["version"])
    assert stored == json.loads(json.dumps(release["contract"])), (
        f"python/ttsbench/upstream/contracts/{release['version']}.json differs from the registry's wheel; "
        f"re-extract: python -m ttsbench.upstream.vllm_omni_contract {release['version']} OUT.json"
    )


def test_vllm_is_no_dependency_so_the_role_installs_it_first(release: dict) -> None:
    assert release["contract"]["requires_vllm"] == []
    names = [t["name"] for t in yaml.safe_load((ROLE / "tasks" / "build.yml").read_text()) if "block" not in t]
    block = next(t for t in yaml.safe_load((ROLE / "tasks" / "build.yml").read_text()) if "block" in t)
    steps = [t["name"] for t in block["block"]]
    vllm_step = next(i for i, n in enumerate(steps) if n.startswith("Install vllm before vllm-omni"))
    omni_step = next(i for i, n in enumerate(steps) if n.startswith("Install the checkout"))
    assert vllm_step < omni_step
    assert any(n.startswith("Import vllm and vllm_omni") for n in names)


def test_role_serve_command_uses_only_what_the_release_has(release: dict, tmp_path: Path) -> None:
    c = release["contract"]
    argv, resolved = _role_argv(release, tmp_path)
    known = set(c["serve_flags"]) | set(c["vllm"]["serve_flags"])
    assert Path(argv[0]).name in c["console_scripts"], "the role runs a console script the release lacks"
    assert argv[1] == "serve" and "--omni" in argv
    emitted = [a.split("=", 1)[0] for a in argv if a.startswith("--")]
    assert [f for f in emitted if f not in known] == [], f"flags vllm-omni {c['version']} does not declare"
    mode = argv[argv.index("--tokenizer-mode") + 1]
    assert mode == "mistral" and mode in c["vllm"]["tokenizer_modes"]
    cfg_flag = "--deploy-config" if "--deploy-config" in argv else "--stage-configs-path"
    cfg = Path(argv[argv.index(cfg_flag) + 1])
    shipped = next(iter(c["voxtral_configs"]))
    if resolved["mechanism"] == "stage yaml copy":
        assert cfg.parent == tmp_path and yaml.safe_load(cfg.read_text())["stage_args"]
    else:
        assert cfg.as_posix().endswith(shipped), f"{cfg} is not the release's Voxtral config {shipped}"
    # deploy-style YAMLs go through --deploy-config (--stage-configs-path reads the legacy stage_args format)
    assert (cfg_flag == "--deploy-config") == ("/deploy/" in shipped)
    stages = {str(s["stage_id"]): s for s in c["voxtral_configs"][shipped]}
    assert resolved["stages"]["0"] == {"gpu_memory_utilization": 0.3, "max_num_seqs": 1}
    assert resolved["stages"]["1"] == {"gpu_memory_utilization": 0.05, "max_num_seqs": stages["1"]["max_num_seqs"]}
    if "--stage-overrides" in argv:
        assert json.loads(argv[argv.index("--stage-overrides") + 1])["1"] == {"gpu_memory_utilization": 0.05}


def test_unknown_extra_flag_is_refused_naming_the_variable(release: dict, tmp_path: Path) -> None:
    sp = _serve_plan()
    with pytest.raises(sp.PlanError) as err:
        _role_argv(release, tmp_path, extra_args=["--stage-configs-pth", "x"])
    assert err.value.variable == "vllm_omni_extra_args"
    argv, _ = _role_argv(release, tmp_path, extra_args=["--max-model-len", "4096"])
    assert argv[-2:] == ["--max-model-len", "4096"]


def test_config_of_another_layout_is_refused_naming_the_variable(release: dict, tmp_path: Path) -> None:
    sp = _serve_plan()
    shipped = next(iter(release["contract"]["voxtral_configs"]))
    other = next(c for c in vllm_omni_contract.CONFIG_CANDIDATES if c != shipped)
    with pytest.raises(sp.PlanError) as err:
        _role_argv(release, tmp_path, config=other)
    assert err.value.variable == "vllm_omni_config"
    with pytest.raises(sp.PlanError) as err:
        _role_argv(release, tmp_path, stage_overrides={"7": {"max_num_seqs": 1}})
    assert err.value.variable == "vllm_omni_stage_overrides"


def test_role_default_is_the_newest_stored_release() -> None:
    newest = max(VERSIONS, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert _defaults()["vllm_omni_version"] == f"v{newest}"
    assert speech_api.known_versions() == sorted(VERSIONS)


def test_client_request_agrees_with_the_release(release: dict) -> None:
    c = release["contract"]
    sp = c["speech"]
    choice = speech_api.choose_stream(c, "voxtral", None, None, None)
    assert choice.response_format in sp["voxtral_stream_response_formats"]
    assert choice.stream in sp["stream_formats"]
    if choice.response_format == "pcm":
        assert choice.pcm_sample_rate == sp["voxtral_sample_rate"] == 24000
    from ttsbench.httpbench import SpeechTarget

    payload = SpeechTarget(
        url="http://x/v1/audio/speech",
        model="m",
        voice="neutral_female",
        response_format=choice.response_format,
        stream=choice.stream,
    ).payload("hello")
    speech_api.check_payload(c, "voxtral", payload)
    assert set(payload) <= set(sp["fields"])
    assert payload["stream_format"] in sp["stream_formats"] and payload["response_format"] in sp["response_formats"]


def test_voxtral_wav_streaming_is_refused_before_any_request(release: dict) -> None:
    c = release["contract"]
    if "wav" in c["speech"]["voxtral_stream_response_formats"]:
        pytest.skip(f"vllm-omni {c['version']} streams WAV for Voxtral")
    with pytest.raises(speech_api.SpeechApiError, match=r"cannot stream 'wav' for voxtral.*no sample rate"):
        speech_api.choose_stream(c, "voxtral", "wav", "audio", None)
    if "sse" not in c["speech"]["stream_formats"]:
        with pytest.raises(speech_api.SpeechApiError, match="stream_format='sse'"):
            speech_api.choose_stream(c, "voxtral", "pcm", "sse", None)
