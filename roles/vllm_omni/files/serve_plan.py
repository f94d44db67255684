#!/usr/bin/env python3
"""Host-side helper of roles/vllm_omni: read what the installed vllm-omni (and vllm) actually offer, then build
the Voxtral serve command line from that — never from a hard-coded layout.

Usage: serve_plan.py SETTINGS_JSON        (run with the venv's python; prints one JSON line)

SETTINGS_JSON: {"model", "host", "port", "tokenizer_mode", "stage_overrides": {"0": {...}}, "extra_args": [...],
"config": "" (auto) or a path relative to the checkout, "work_dir": folder for a generated stage YAML}.

Read without importing vllm or vllm_omni (importing pulls torch/CUDA): console scripts from the installed
distribution's entry points, serve flags from the argparse calls in their source (``ast``), the Voxtral config
from the package folder. Output: {"layout": {...}, "argv": [...], "stages": {...}} or {"error", "variable"}.
The same functions read an unpacked wheel (tests/test_vllm_omni_contract.py runs them against the registry's).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

DEPLOY_CONFIG = "deploy/voxtral_tts.yaml"
STAGE_CONFIG = "model_executor/stage_configs/voxtral_tts.yaml"
SCRIPT_PREFERENCE = ("vllm-omni", "vllm")
# Flags the role sets itself; extra args may not repeat them.
OWNED_FLAGS = {
    "--omni",
    "--tokenizer-mode",
    "--host",
    "--port",
    "--deploy-config",
    "--stage-configs-path",
    "--stage-overrides",
}
# vllm sources whose argparse/dataclass definitions make up `serve`'s flags (old and new layouts).
VLLM_FLAG_SOURCES = ("engine/arg_utils.py", "entrypoints/openai/cli_args.py", "entrypoints/launchers/cli_args.py")


class PlanError(Exception):
    def __init__(self, message: str, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


def argparse_flags(path: Path) -> set[str]:
    """Every option string passed to an ``add_argument(...)`` call in a Python source file."""
    flags: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                    flags.add(arg.value)
    return flags


def dataclass_flags(path: Path, class_suffix: str = "FrontendArgs") -> set[str]:
    """``--field-name`` for each annotated field of classes named *FrontendArgs (vllm builds those flags from
    the dataclass fields: ``f"--{key.replace('_', '-')}"``)."""
    flags: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name.endswith(class_suffix):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    flags.add("--" + stmt.target.id.replace("_", "-"))
    return flags


def package_dir(name: str, search: list[str] | None = None) -> Path | None:
    """Folder of a top-level package, found without importing it."""
    if search is not None:
        for entry in search:
            cand = Path(entry) / name
            if cand.is_dir():
                return cand
        return None
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def console_scripts(dist: str, search: list[str] | None = None) -> dict[str, str]:
    """The console scripts an installed distribution declares (its entry_points.txt)."""
    try:
        d = md.distribution(dist) if search is None else next(iter(md.distributions(name=dist, path=search)))
    except (md.PackageNotFoundError, StopIteration):
        return {}
    return {ep.name: ep.value for ep in d.entry_points if ep.group == "console_scripts"}


def dist_version(dist: str, search: list[str] | None = None) -> str | None:
    try:
        d = md.distribution(dist) if search is None else next(iter(md.distributions(name=dist, path=search)))
    except (md.PackageNotFoundError, StopIteration):
        return None
    return d.version


def vllm_flags(vllm_dir: Path) -> set[str]:
    flags: set[str] = set()
    for rel in VLLM_FLAG_SOURCES:
        f = vllm_dir / rel
        if f.is_file():
            flags |= argparse_flags(f) | dataclass_flags(f)
    return flags


def read_layout(search: list[str] | None = None) -> dict[str, Any]:
    """What the installed vllm-omni + vllm offer (search: explicit sys.path-like folders, e.g. unpacked wheels)."""
    omni = package_dir("vllm_omni", search)
    if omni is None:
        raise PlanError(
            "vllm_omni is not installed in the venv (the build did not install the checkout)", "vllm_omni_version"
        )
    serve_py = omni / "entrypoints" / "cli" / "serve.py"
    if not serve_py.is_file():
        raise PlanError(f"{serve_py} is missing: this vllm-omni has no serve command", "vllm_omni_version")
    omni_flags = argparse_flags(serve_py)
    vdir = package_dir("vllm", search)
    v_flags = vllm_flags(vdir) if vdir else set()
    scripts = console_scripts("vllm-omni", search)
    script = next((s for s in SCRIPT_PREFERENCE if s in scripts), None)
    deploy, stage = omni / DEPLOY_CONFIG, omni / STAGE_CONFIG
    if deploy.is_file() and "--deploy-config" in omni_flags:
        style, cfg, cfg_flag = "deploy", deploy, "--deploy-config"
    elif stage.is_file() and "--stage-configs-path" in omni_flags:
        style, cfg, cfg_flag = "stage_configs", stage, "--stage-configs-path"
    else:
        style, cfg, cfg_flag = None, None, None
    return {
        "vllm_omni_version": dist_version("vllm-omni", search),
        "vllm_version": dist_version("vllm", search),
        "vllm_omni_dir": str(omni),
        "vllm_dir": str(vdir) if vdir else None,
        "console_scripts": scripts,
        "script": script,
        "omni_flags": sorted(omni_flags),
        "vllm_flags": sorted(v_flags),
        "config_style": style,
        "config_path": str(cfg) if cfg else None,
        "config_flag": cfg_flag,
        "stage_overrides_flag": "--stage-overrides" in omni_flags,
    }


def _flag_of(arg: str) -> str:
    return arg.split("=", 1)[0]


def stage_values(cfg: Path) -> dict[str, dict[str, Any]]:
    """Per-stage gpu_memory_utilization / max_num_seqs as the YAML sets them (needs PyYAML, a vllm dependency)."""
    import yaml

    doc = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
    out: dict[str, dict[str, Any]] = {}
    for st in doc.get("stages") or doc.get("stage_args") or []:
        args = st.get("engine_args", st)
        out[str(st.get("stage_id"))] = {k: args.get(k) for k in ("gpu_memory_utilization", "max_num_seqs")}
    return out


def _write_stage_yaml(cfg: Path, overrides: dict[str, dict[str, Any]], work_dir: Path) -> Path:
    """Copy of a stage_args YAML with per-stage engine_args overridden (for versions without --stage-overrides)."""
    import yaml

    doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    for st in doc.get("stage_args", []):
        for key, value in overrides.get(str(st.get("stage_id")), {}).items():
            st.setdefault("engine_args", {})[key] = value
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / "voxtral_tts.stages.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def build_argv(
    layout: dict[str, Any], settings: dict[str, Any], bin_dir: str, write_yaml: bool = True
) -> tuple[list[str], dict[str, Any]]:
    """The serve argv and the effective per-stage settings, or PlanError naming the variable to fix."""
    if not layout["script"]:
        raise PlanError(
            f"vllm-omni declares no console script of {SCRIPT_PREFERENCE} (it has {sorted(layout['console_scripts'])})",
            "vllm_omni_version",
        )
    known = set(layout["omni_flags"]) | set(layout["vllm_flags"])
    for flag in ("--omni", "--tokenizer-mode", "--host", "--port"):
        if flag not in known:
            raise PlanError(
                f"this vllm-omni/vllm pair does not know {flag}, which Voxtral needs "
                f"(vllm {layout['vllm_version']} at {layout['vllm_dir']})",
                "vllm_omni_vllm_source",
            )
    if settings.get("tokenizer_mode") != "mistral":
        raise PlanError("Voxtral needs --tokenizer-mode mistral", "vllm_omni_tokenizer_mode")
    cfg_rel = settings.get("config") or ""
    if cfg_rel:
        cfg = Path(layout["vllm_omni_dir"]).parent / cfg_rel
        if not cfg.is_file():
            raise PlanError(f"{cfg_rel} does not exist in the checkout", "vllm_omni_config")
        style = "deploy" if "/deploy/" in f"/{cfg_rel}" else "stage_configs"
        cfg_flag = "--deploy-config" if style == "deploy" else "--stage-configs-path"
        if cfg_flag not in known:
            raise PlanError(f"{cfg_rel} needs {cfg_flag}, which this vllm-omni does not have", "vllm_omni_config")
    elif layout["config_style"]:
        cfg, style, cfg_flag = Path(layout["config_path"]), layout["config_style"], layout["config_flag"]
    else:
        raise PlanError(
            f"this vllm-omni has no Voxtral config ({DEPLOY_CONFIG} with --deploy-config or "
            f"{STAGE_CONFIG} with --stage-configs-path)",
            "vllm_omni_version",
        )
    extra = [str(a) for a in settings.get("extra_args") or []]
    for arg in extra:
        if arg.startswith("--"):
            if _flag_of(arg) in OWNED_FLAGS or _flag_of(arg).replace("_", "-") in OWNED_FLAGS:
                raise PlanError(f"{_flag_of(arg)} is set by the role; do not pass it", "vllm_omni_extra_args")
            if _flag_of(arg) not in known:
                raise PlanError(f"{_flag_of(arg)} is not a serve flag of this vllm-omni/vllm", "vllm_omni_extra_args")
    overrides = {str(k): dict(v) for k, v in (settings.get("stage_overrides") or {}).items()}
    stages = stage_values(cfg)
    for sid in overrides:
        if sid not in stages:
            raise PlanError(f"stage {sid} is not in {cfg.name} (stages {sorted(stages)})", "vllm_omni_stage_overrides")
    argv = [
        f"{bin_dir}/{layout['script']}",
        "serve",
        settings["model"],
        "--omni",
        "--tokenizer-mode",
        settings["tokenizer_mode"],
    ]
    mechanism = "none"
    if overrides and layout["stage_overrides_flag"]:
        mechanism = "--stage-overrides"
    elif overrides and style == "stage_configs" and write_yaml:
        cfg = _write_stage_yaml(cfg, overrides, Path(settings["work_dir"]))
        mechanism = "stage yaml copy"
    elif overrides:
        raise PlanError(
            "this vllm-omni has no --stage-overrides and its config is no stage_args YAML", "vllm_omni_stage_overrides"
        )
    argv += [cfg_flag, str(cfg)]
    if mechanism == "--stage-overrides":
        argv += ["--stage-overrides", json.dumps(overrides, sort_keys=True, separators=(",", ":"))]
    argv += ["--host", str(settings["host"]), "--port", str(settings["port"]), *extra]
    effective = {sid: {**vals, **overrides.get(sid, {})} for sid, vals in stages.items()}
    return argv, {"config_style": style, "config": str(cfg), "mechanism": mechanism, "stages": effective}


def main(argv: list[str]) -> int:
    settings = json.loads(argv[0])
    try:
        layout = read_layout()
        cmd, resolved = build_argv(layout, settings, str(Path(sys.executable).parent))
    except PlanError as exc:
        print(json.dumps({"error": str(exc), "variable": exc.variable}))
        return 2
    print(json.dumps({"layout": layout, "argv": cmd, **resolved}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
