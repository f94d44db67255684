"""The contract of a vllm-omni release (and the vllm release it is built against), read from their wheels.

Everything here comes from the package files, never from our own reading of the docs: console scripts
(entry_points.txt), serve flags (``add_argument`` calls and vllm's dataclass-generated frontend flags, parsed
with ``ast``), the Voxtral config file and its per-stage memory/batch values, the speech request fields and
which response formats stream for Voxtral. vllm-omni publishes a release per even vllm minor version
(README: "aligned with every even-numbered upstream vLLM minor version"), so vllm-omni X.Y.Z pairs with vllm
X.Y.Z.

``python -m ttsbench.upstream.vllm_omni_contract VERSION [OUT.json]`` writes one contract as JSON.
"""

from __future__ import annotations

import ast
import configparser
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from ttsbench.upstream import registry

VERSIONS = ("0.18.0", "0.20.0", "0.30.0")
CONFIG_CANDIDATES = ("vllm_omni/deploy/voxtral_tts.yaml", "vllm_omni/model_executor/stage_configs/voxtral_tts.yaml")
VLLM_MEMBERS = (
    "vllm/engine/arg_utils.py",
    "vllm/entrypoints/openai/cli_args.py",
    "vllm/entrypoints/launchers/cli_args.py",
    "vllm/entrypoints/cli/main.py",
    "vllm/config/model.py",
)
WAV_NEEDS_SR = "sample rate metadata for WAV streaming"
VOICE_OR_REF = ("'voice' (preset speaker) or 'ref_audio'", "Voxtral requires either a voice name or ref_audio")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _call_flags(mod: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(mod):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            out |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return out


def _frontend_fields(mod: ast.Module) -> set[str]:
    out: set[str] = set()
    for cls in (n for n in ast.walk(mod) if isinstance(n, ast.ClassDef) and n.name.endswith("FrontendArgs")):
        out |= {
            "--" + s.target.id.replace("_", "-")
            for s in cls.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
        }
    return out


def _literal_values(node: ast.expr | None) -> list[Any]:
    """Values of a ``Literal[...]`` annotation (also inside ``X | None``)."""
    if node is None:
        return []
    if isinstance(node, ast.BinOp):
        return _literal_values(node.left) + _literal_values(node.right)
    if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
        sl = node.slice
        elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        return [e.value for e in elts if isinstance(e, ast.Constant)]
    return []


def _class(mod: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in ast.walk(mod) if isinstance(n, ast.ClassDef) and n.name == name)


def _default(stmt: ast.AnnAssign) -> Any:
    v = stmt.value
    if isinstance(v, ast.Constant):
        return v.value
    if isinstance(v, ast.Call):  # Field(default=...)
        for kw in v.keywords:
            if kw.arg == "default" and isinstance(kw.value, ast.Constant):
                return kw.value.value
    return None


def _raises_on_sse(cls: ast.ClassDef) -> bool:
    for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "validate_stream_format"):
        return any(isinstance(n, ast.Raise) for n in ast.walk(fn))
    return False


def _streaming_formats(cls: ast.ClassDef) -> list[str]:
    """Formats the request model's validate_streaming_constraints accepts (``not in ("pcm", "wav")``)."""
    for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "validate_streaming_constraints"):
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Compare)
                and isinstance(node.ops[0], ast.NotIn)
                and isinstance(node.comparators[0], ast.Tuple)
            ):
                return sorted(e.value for e in node.comparators[0].elts if isinstance(e, ast.Constant))
    return []


def speech_contract(tree: Path) -> dict[str, Any]:
    proto = _tree(tree / "vllm_omni/entrypoints/openai/protocol/audio.py")
    req = _class(proto, "OpenAICreateSpeechRequest")
    fields = {s.target.id: s for s in req.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    serving = (tree / "vllm_omni/entrypoints/openai/serving_speech.py").read_text(encoding="utf-8")
    adapter = tree / "vllm_omni/entrypoints/openai/tts_adapters/voxtral.py"
    voxtral_text = serving + (adapter.read_text(encoding="utf-8") if adapter.is_file() else "")
    model_dir = tree / "vllm_omni/model_executor/models/voxtral_tts"
    out_keys: set[str] = set()
    for f in sorted(model_dir.glob("*.py")):
        for node in ast.walk(_tree(f)):
            if isinstance(node, ast.keyword) and node.arg == "multimodal_outputs" and isinstance(node.value, ast.Dict):
                out_keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    stream_rf = _streaming_formats(req)
    wav_needs_sr = WAV_NEEDS_SR in serving
    voxtral_streams = [f for f in stream_rf if f != "wav" or not wav_needs_sr or "sr" in out_keys]
    tok = (model_dir / "voxtral_tts_audio_tokenizer.py").read_text(encoding="utf-8")
    rate = next(
        (int(line.split("=")[1]) for line in tok.splitlines() if line.strip().startswith("sampling_rate: int =")), None
    )
    return {
        "fields": sorted(fields),
        "response_formats": _literal_values(fields["response_format"].annotation),
        "default_response_format": _default(fields["response_format"])
        if isinstance(_default(fields["response_format"]), str)
        else "wav",
        "stream_formats": [
            v for v in _literal_values(fields["stream_format"].annotation) if not (v == "sse" and _raises_on_sse(req))
        ],
        "default_stream_format": _default(fields["stream_format"]),
        "stream_response_formats": stream_rf,
        "wav_stream_needs_sample_rate": wav_needs_sr,
        "voxtral_output_keys": sorted(out_keys),
        "voxtral_stream_response_formats": voxtral_streams,
        "voxtral_needs_voice_or_ref_audio": any(m in voxtral_text for m in VOICE_OR_REF),
        "voxtral_sample_rate": rate,
    }


def _entry_points(tree: Path) -> dict[str, str]:
    cp = configparser.ConfigParser()
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    for f in tree.glob("*.dist-info/entry_points.txt"):
        cp.read(f)
    return dict(cp["console_scripts"]) if cp.has_section("console_scripts") else {}


def _stages(cfg: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    out = []
    for st in doc.get("stages") or doc.get("stage_args") or []:
        args = st.get("engine_args", st)
        out.append(
            {
                "stage_id": st["stage_id"],
                "gpu_memory_utilization": args.get("gpu_memory_utilization"),
                "max_num_seqs": args.get("max_num_seqs"),
                "tokenizer_mode": args.get("tokenizer_mode"),
            }
        )
    return out


def _requires(tree: Path) -> list[str]:
    meta = next(tree.glob("*.dist-info/METADATA")).read_text(encoding="utf-8")
    return [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]


def vllm_contract(tree: Path, meta: dict[str, str], version: str) -> dict[str, Any]:
    flags: set[str] = set()
    for rel in VLLM_MEMBERS[:3]:
        if (tree / rel).is_file():
            mod = _tree(tree / rel)
            flags |= _call_flags(mod) | _frontend_fields(mod)
    main = (tree / "vllm/entrypoints/cli/main.py").read_text(encoding="utf-8")
    model = _tree(tree / "vllm/config/model.py")
    modes = next(
        (
            _literal_values(n.value)
            for n in ast.walk(model)
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "TokenizerMode"
        ),
        [],
    )
    return {
        "version": version,
        **meta,
        "console_scripts": _entry_points(tree),
        "serve_flags": sorted(flags),
        "delegates_omni": '"--omni"' in main and "vllm_omni" in main,
        "tokenizer_modes": modes,
    }


def extract(version: str) -> dict[str, Any]:
    """The contract of vllm-omni ``version`` and vllm ``version`` (downloaded and cached on first use)."""
    tree, meta = registry.unpacked_wheel("vllm-omni", version)
    vtree, vmeta = registry.wheel_members("vllm", version, VLLM_MEMBERS)
    vmeta.pop("fetched_bytes", None)
    serve = _tree(tree / "vllm_omni/entrypoints/cli/serve.py")
    configs = [c for c in CONFIG_CANDIDATES if (tree / c).is_file()]
    return {
        "package": "vllm-omni",
        "version": version,
        **meta,
        "requires_vllm": [r for r in _requires(tree) if r.split()[0].split("=")[0].split(">")[0] == "vllm"],
        "console_scripts": _entry_points(tree),
        "serve_flags": sorted(_call_flags(serve)),
        "voxtral_configs": {c: _stages(tree / c) for c in configs},
        "speech": speech_contract(tree),
        "vllm": vllm_contract(vtree, vmeta, version),
    }


def main(argv: list[str]) -> int:
    doc = extract(argv[0])
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if len(argv) > 1:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
