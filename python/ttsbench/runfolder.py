"""The controller's run folder: create it (never overwrite), merge per-system parts, record Gemma, finish.

Playbooks call these through ``ttsbench run-folder ...`` (commands/run_folder.py). A *part* is a folder
written on a host (or the controller) by ``bench-http --run-dir`` or ``bench-chatterbox --out``: its own
results.json plus ``wavs/<engine>/<host>/*.wav``. Merging copies the WAVs the part's rows name into the run
folder and puts the part's systems into the run's results.json (validated, atomic). See docs/run-folder.md.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from ttsbench import results
from ttsbench.atomic import write_atomic
from ttsbench.errors import UserError

KINDS = ("bench-chatterbox", "bench-voxtral", "failover-drill")
WEIGHTS = ("hub", "local", "random-init", "n/a")


def planned_run_dir(root: str | os.PathLike, kind: str, now: datetime | None = None) -> Path:
    """The folder ``create_run_dir`` would make now: ``<root>/<kind>-<UTC stamp>[-N]`` (first free name)."""
    base = Path(root) / f"{kind}-{results.utc_stamp(now)}"
    cand, n = base, 1
    while cand.exists():
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    return cand


def create_run_dir(root: str | os.PathLike, kind: str, now: datetime | None = None) -> Path:
    """Make a new run folder with an initial results.json; an existing folder is never reused."""
    if kind not in KINDS:
        raise UserError(f"run kind {kind!r}: expected one of {', '.join(KINDS)}")
    Path(root).mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        cand = planned_run_dir(root, kind, now)
        try:
            cand.mkdir()  # atomic claim: fails when a parallel run took the name first
        except FileExistsError:
            continue
        doc = results.new_document(cand.name, kind)
        results.write_results(cand, doc)
        return cand
    raise UserError(f"{root}: could not find a free run folder name for {kind}")


def _coerce(value: Any) -> Any:
    """Ansible may hand numbers and nulls over as strings; turn them back into JSON types."""
    if isinstance(value, str):
        v = value.strip()
        if v in ("", "None", "null"):
            return None
        if v in ("True", "true"):
            return True
        if v in ("False", "false"):
            return False
        try:
            return int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return value
    return value


def parse_assignments(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _copy_atomic(src: Path, dest: Path) -> None:
    write_atomic(dest, lambda tmp: shutil.copyfile(src, tmp))


def _safe_rel(rel: str, where: str) -> Path:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise UserError(f"{where}: WAV path {rel!r} must be relative inside the run folder")
    return p


def merge_part(
    run_dir: str | os.PathLike,
    part_dir: str | os.PathLike,
    *,
    engine: dict[str, Any] | None = None,
    host: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> list[str]:
    """Merge every system of the part into the run; returns the merged system ids.

    ``engine``/``host``/``config`` are applied over each system's blocks (e.g. weights=random-init,
    standin=true, facts the HTTP client could not see). A part that is not a valid run document, or whose
    rows name WAVs it does not hold, is refused and the run's results.json stays as it was.
    """
    run, part = Path(run_dir), Path(part_dir)
    doc = results.load_results(run)
    pdoc = results.load_results(part)
    if not pdoc["systems"]:
        raise UserError(f"{part}: the part holds no measured system")
    merged: list[str] = []
    copies: list[tuple[Path, Path]] = []
    for system in pdoc["systems"]:
        for row in system["utterances"]:
            if row.get("wav"):
                rel = _safe_rel(row["wav"], str(part))
                if not (part / rel).is_file():
                    raise UserError(f"{part}: {system['system_id']} {row['utt_id']} names {rel} but it is missing")
                copies.append((part / rel, run / rel))
        if engine:
            system["engine"].update({k: _coerce(v) if k != "version" else v for k, v in engine.items()})
        if host:
            system["host"].update({k: (None if _coerce(v) is None else str(v)) for k, v in host.items()})
        if config:
            system["config"].update(config)
        results.put_system(doc, system)
        merged.append(system["system_id"])
    ref = Path("reference") / "voice.wav"  # the part's reference voice (bench-http --reference) joins the run
    if (part / ref).is_file():
        if (run / ref).is_file() and (run / ref).read_bytes() != (part / ref).read_bytes():
            raise UserError(f"{part}: its {ref} differs from the run's; one run compares systems on one reference")
        copies.append((part / ref, run / ref))
    results.validate(doc, str(run / results.RESULTS_NAME))
    for src, dest in copies:
        _copy_atomic(src, dest)
    results.write_results(run, doc)
    return merged


def gemma_record(raw: dict[str, Any]) -> dict[str, Any]:
    """A gemma_guard drift record (JSON from the controller) as the results.json ``gemma`` object."""
    rec = {k: _coerce(v) for k, v in raw.items()}
    rec["standin"] = bool(rec.get("standin"))
    if rec.get("gate") not in ("pass", "fail"):
        rec["gate"] = "fail"
    if rec.get("max_drift") is None:
        rec["max_drift"] = 1.2
    return rec


def combine_gemma(records: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """One gemma object for the run: the single host's record, or the worst of several (any fail = fail)."""
    if not records:
        return None
    recs = {h: gemma_record(r) for h, r in sorted(records.items())}
    if len(recs) == 1:
        ((host, only),) = recs.items()
        return {**only, "host": host}

    def key(item: tuple[str, dict[str, Any]]) -> tuple[int, float]:
        r = item[1]
        return (r["gate"] == "fail", r["drift"] if isinstance(r.get("drift"), (int, float)) else float("inf"))

    host, worst = max(recs.items(), key=key)
    gate = "fail" if any(r["gate"] == "fail" for r in recs.values()) else "pass"
    return {**worst, "gate": gate, "host": host, "hosts": recs}


def record_gemma(run_dir: str | os.PathLike, files: list[str | os.PathLike]) -> dict[str, Any] | None:
    """Read per-host drift records (``gemma/<host>.json``), write ``gemma/drift.json`` and results' slot."""
    run = Path(run_dir)
    records: dict[str, dict[str, Any]] = {}
    for f in files:
        p = Path(f)
        try:
            records[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{p}: not a readable gemma drift record ({exc})") from exc
    combined = combine_gemma(records)
    doc = results.load_results(run)
    doc["gemma"] = combined
    results.validate(doc, str(run / results.RESULTS_NAME))
    if combined is not None:
        results.write_json_atomic(run / "gemma" / "drift.json", combined)
    results.write_results(run, doc)
    return combined


def finish(run_dir: str | os.PathLike, expect: list[str] | None = None) -> dict[str, Any]:
    """Close the run: finished_at, complete (every expected system present and complete), validate."""
    run = Path(run_dir)
    doc = results.load_results(run)
    ids = {s["system_id"] for s in doc["systems"]}
    missing = sorted(set(expect or []) - ids)
    complete = (
        not missing
        and bool(doc["systems"])
        and all(
            s.get("config", {}).get("complete", True) is not False and s["summary"]["n"] > 0 for s in doc["systems"]
        )
    )
    doc["complete"] = complete
    doc["finished_at"] = results.utc_now()
    results.write_results(run, doc)
    return {"run_dir": str(run), "complete": complete, "missing": missing, "systems": sorted(ids)}


def check_run(run_dir: str | os.PathLike, min_rms_dbfs: float = -50.0) -> list[str]:
    """Problems with a finished run folder whose document is valid: every ok row's WAV decodes to non-silent
    audio. An invalid document raises :class:`ttsbench.runcheck.InvalidRun` first."""
    from ttsbench.audio import read_wav, rms_dbfs
    from ttsbench.runcheck import load_valid_run

    run, doc = load_valid_run(run_dir)  # an invalid document is an error (exit 2), not a list of problems
    problems: list[str] = []
    for s in doc.get("systems", []):
        for row in s.get("utterances", []):
            if not row.get("ok"):
                continue
            wav = row.get("wav")
            if not wav or not (run / wav).is_file():
                problems.append(f"{s['system_id']} {row['utt_id']}: WAV {wav} missing")
                continue
            try:
                samples, sr = read_wav(run / wav)
            except UserError as exc:
                problems.append(str(exc))
                continue
            if samples.size == 0 or rms_dbfs(samples) < min_rms_dbfs:
                problems.append(f"{wav}: silent ({rms_dbfs(samples):.1f} dBFS, {samples.size / sr:.2f} s)")
    return problems
