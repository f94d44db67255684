"""``ttsbench doctor -i INVENTORY``: read-only checks of every host (playbooks/doctor.yml) → one table of findings,
each with what to fix. Nothing on the hosts is changed; the primary TTS gets one speech request (its template)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError

VOXTRAL_MIN_KB = 7_000_000  # the weights are ~7.5 GB


@dataclass(frozen=True)
class Finding:
    host: str
    check: str
    ok: bool | None  # None: not applicable / informational
    detail: str
    fix: str = ""


def run(inventory: str | Path, probe_primary: bool = True) -> list[Finding]:
    from ttsbench.runner import run_playbook

    inv = Path(inventory)
    if not inv.exists():
        raise UserError(f"inventory {inventory} not found")
    with tempfile.TemporaryDirectory(prefix="ttsbench-doctor-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        res = run_playbook(
            "doctor.yml", inv, {"doctor_out": str(out)}, private_data_dir=Path(tmp) / "runner", timeout=900
        )
        unreachable = {
            ev["event_data"]["host"]: ev["event_data"].get("res", {}).get("msg", "")
            for ev in res.events
            if ev.get("event") == "runner_on_unreachable"
        }
        docs = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))} if out.is_dir() else {}
    findings: list[Finding] = []
    for host, msg in sorted(unreachable.items()):
        if host not in docs:
            findings.append(
                Finding(
                    host,
                    "ssh",
                    False,
                    " ".join(str(msg).split())[:200],
                    "check ansible_host/ansible_user/the SSH key (ssh USER@HOST must work without a password)",
                )
            )
    for d in docs.values():
        findings += evaluate(d)
        if probe_primary and d.get("primary_url"):
            findings.append(probe(d))
    if not docs and not unreachable:
        raise UserError(f"doctor ran no host checks ({res.status}): {'; '.join(res.failure_messages()[:3])}")
    return findings


def evaluate(d: dict[str, Any]) -> list[Finding]:
    """Findings of one host's doctor.json (pure: unit-tested)."""
    h = d["host"]
    out = [Finding(h, "ssh", True, f"as {d['user']} (uid {d['uid']}), {d['arch']}")]
    needs_root = d["uid"] != 0 and (
        d.get("root_become")
        or any(
            s.get(
                "become",
                s.get("backend") in ("docker",)
                or (s.get("backend") == "systemd" and s.get("scope", "system") == "system"),
            )
            for s in d.get("services", [])
        )
    )
    if d.get("become_ok") is None:
        out.append(Finding(h, "become", None, "SSH user is root: no escalation needed"))
    elif d["become_ok"]:
        out.append(Finding(h, "become", True, "sudo works without a password"))
    else:
        out.append(
            Finding(
                h,
                "become",
                False if needs_root else None,
                " ".join(str(d.get("become_error") or "sudo failed").split())[:160],
                "give the SSH user passwordless sudo, or run with -K (ask for the sudo password)"
                if needs_root
                else "not needed by the configured backends",
            )
        )
    if d.get("docker") is not None:
        ok = d["docker"]["rc"] == 0
        denied = "permission denied" in d["docker"]["out"].lower()
        out.append(
            Finding(
                h,
                "docker",
                ok or (denied and bool(d.get("become_ok"))),
                ("server " + d["docker"]["out"].strip()) if ok else d["docker"]["out"].strip()[:160],
                ""
                if ok
                else (
                    "add the SSH user to the docker group (or keep become for docker)"
                    if denied
                    else "install/start docker"
                ),
            )
        )
    out.append(
        Finding(
            h,
            "systemd",
            None,
            "systemd is PID 1"
            if d["systemd"]
            else "no systemd: process supervision and sleeper watchdog (setsid) are used",
        )
    )
    services = d.get("services") or []
    checked = [
        ("llm_service_error", "LLM service", "gpu", 0),
        ("primary_service_error", "primary TTS service", "tts_primary", -1),
    ]
    for key, what, group, index in checked:
        if d.get(key):
            out.append(Finding(h, what, False, " ".join(str(d[key]).split())[:240], "see the message"))
        elif group in d.get("groups", []) and services and (group == "gpu" or len(services) > ("gpu" in d["groups"])):
            out.append(Finding(h, what, True, _describe(services[index])))
    if d.get("gpu") is not None:
        lines = d["gpu"]
        if not lines or lines[0] == "no-nvidia-smi":
            out.append(Finding(h, "gpu", False, "nvidia-smi not found", "install the NVIDIA driver (nvidia-smi)"))
        else:
            name, cc, driver = ([p.strip() for p in lines[0].split(",")] + ["?", "?", "?"])[:3]
            cuda = lines[1] if len(lines) > 1 else "?"
            out.append(
                Finding(
                    h,
                    "gpu",
                    True,
                    f"{name}, sm_{cc.replace('.', '')} (cc {cc}), driver {driver}, CUDA {cuda}, {d['arch']}",
                )
            )
    free_gb = d["disk_free_kb"] / 1048576
    need = d.get("min_free_gb", 20)
    out.append(
        Finding(
            h,
            "disk",
            free_gb >= need,
            f"{free_gb:.0f} GB free at {d['disk_path']}",
            "" if free_gb >= need else f"free space (need {need} GB) or set ttsbench_root elsewhere",
        )
    )
    if not d["disk_writable"] and not d.get("root_become"):
        out.append(
            Finding(
                h,
                "ttsbench_root",
                False,
                f"{d['disk_path']} is not writable by {d['user']}",
                "set ttsbench_root_become: true (sudo makes it) or pick a writable ttsbench_root",
            )
        )
    if d.get("voxtral") is not None:
        kb = int((d["voxtral"] or ["0"])[0] or 0)
        path = d["voxtral"][1] if len(d["voxtral"]) > 1 else "?"
        out.append(
            Finding(
                h,
                "voxtral weights",
                kb >= VOXTRAL_MIN_KB,
                f"{kb / 1048576:.1f} GB at {path}",
                ""
                if kb >= VOXTRAL_MIN_KB
                else "download mistralai/Voxtral-4B-TTS-2603 into the HF cache "
                "(huggingface-cli download) or the first run fetches ~7.5 GB",
            )
        )
    out += _watchdog(h, d.get("watchdog"))
    if d.get("ports"):
        busy = d.get("ports_busy") or []
        out.append(
            Finding(
                h,
                "ports",
                not busy,
                f"free: {[p for p in d['ports'] if p not in busy]} busy: {busy}",
                "" if not busy else "stop what listens there or change chatterbox_server_port/vllm_omni_port",
            )
        )
    return out


def _watchdog(h: str, w: dict[str, Any] | None) -> list[Finding]:
    """gemma_guard's watchdog: a pause in progress, a stale lock, or what its last firing did."""
    if not w:
        return []
    out = []
    log = f"{w.get('state_dir', '<state_dir>')}/watchdog.log"
    lock = w.get("lock")
    if lock:
        what = f"run {lock.get('run_id')} paused the LLM {lock.get('age_s', 0):.0f} s ago"
        if lock.get("owner_alive"):
            out.append(Finding(h, "llm paused", None, f"{what}; its watchdog (pid {lock.get('pid')}) is armed"))
        else:
            out.append(
                Finding(
                    h,
                    "llm paused",
                    False,
                    f"{what} and its watchdog is gone (stale lock)",
                    f"check the LLM runs (start it by hand if not); the next run takes over; {log}",
                )
            )
    fired = w.get("last_firing")
    if fired:
        n = len([a for a in fired.get("attempts") or [] if not a.get("already")])
        what = (
            f"fired for run {fired.get('run_id')} at {fired.get('fired_at')} ({fired.get('reason')}): "
            f"{fired.get('outcome')} after {n} start attempt(s)"
        )
        ok = {"resumed": None, "running": None}.get(fired.get("outcome", ""), False)
        out.append(
            Finding(
                h,
                "llm watchdog",
                ok,
                what,
                "" if ok is None else f"the LLM did not come back: start it by hand, see {log}",
            )
        )
    return out


def _describe(service: dict[str, Any]) -> str:
    b = service.get("backend", "?")
    what = {
        "docker": f"container {service.get('container')}",
        "systemd": f"{service.get('scope', 'system')} unit {service.get('unit')}",
        "command": "your start/stop/status commands",
        "ttsbench": "ttsbench's server",
    }
    return f"{b}: {what.get(b, '?')} exists"


def probe(d: dict[str, Any]) -> Finding:
    """One speech request to the primary TTS through its request template (from the controller)."""
    from ttsbench import reqtemplate, speechprobe

    spec = d.get("primary_template") or ""
    try:
        template = None
        if spec:
            path = spec if spec in reqtemplate.PRESETS or spec.startswith("/") else str(Path(d["inventory_dir"]) / spec)
            template = reqtemplate.load(path, stream="none")
        res, _ = speechprobe.probe_once(
            d["primary_url"],
            "Hello, this is a doctor check.",
            voice=None,
            model=None,
            timeout_s=60,
            min_duration_s=0.3,
            min_rms_dbfs=-45,
            template=template,
        )
    except UserError as exc:
        return Finding(d["host"], "primary TTS", False, str(exc), "fix failover_primary_request_template")
    return Finding(
        d["host"],
        "primary TTS",
        res.ok,
        f"{d['primary_url']} ({template.name if template else 'openai'}): "
        + (f"{res.duration_s:.1f} s audio in {res.total_ms:.0f} ms" if res.ok else str(res.error)),
        ""
        if res.ok
        else "is it running? set failover_primary_url and failover_primary_request_template to what it speaks",
    )
