"""Human ratings: validation, import from CSV/YAML, per-rater listening sessions and ``scores/ratings.json``.

Listening sessions are stored per rater (``scores/raters/<rater>/<session>.json``, written on submit only);
``scores/ratings.json`` is their aggregate: each rater's latest session, raters flagged by the hidden catch
trials left out (listed in ``excluded_raters``)."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError
from ttsbench.results import utc_now
from ttsbench.scoring.rundoc import RunDir, read_json, write_json_atomic
from ttsbench.scoring.stats import rating_stats

QUESTION = (
    "Voice identity: how similar is this clip to the reference voice? "
    "1 = a different person … 5 = the same voice (should sound identical; not 'which is better')."
)
SCALE = (1, 5)
RATINGS_NAME = "ratings.json"
RATERS_DIR = "raters"
RATER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def ratings_path(run: RunDir) -> Path:
    return run.scores_dir / RATINGS_NAME


def load_ratings(run: RunDir) -> dict[str, Any] | None:
    p = ratings_path(run)
    return read_json(p) if p.is_file() else None


def validate_rows(run: RunDir, rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Check ids, systems, score range and duplicates; return normalised rows. Errors name the row."""
    systems = {s: {c.utt_id for c in run.clips(s, check_files=False) if c.ok} for s in run.system_ids()}
    seen: dict[tuple[str, str], int] = {}
    out = []
    for i, r in enumerate(rows, start=1):
        at = f"{where}: row {r.get('_line', i)}"
        utt = str(r.get("utt_id") or r.get("item") or "").strip()
        sys_ = str(r.get("system") or "").strip()
        if not utt or not sys_:
            raise UserError(f"{at}: needs 'utt_id' (or 'item') and 'system'")
        if sys_ not in systems:
            raise UserError(f"{at}: unknown system {sys_!r} (run has: {', '.join(sorted(systems))})")
        if utt not in systems[sys_]:
            raise UserError(
                f"{at}: unknown utterance id {utt!r} for {sys_} (run has: {', '.join(sorted(systems[sys_]))})"
            )
        raw = r.get("score")
        try:
            score = float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{at}: score {raw!r} is not a number 1–5") from None
        if not SCALE[0] <= score <= SCALE[1]:
            raise UserError(f"{at}: score {raw!r} out of range {SCALE[0]}–{SCALE[1]}")
        rater = str(r.get("rater") or "").strip() or None
        if rater is not None and not RATER_ID.fullmatch(rater):
            raise UserError(f"{at}: rater {rater!r} must be letters, digits, '.', '_' or '-' (max 40)")
        key = (rater or "", utt, sys_)
        if key in seen:
            who = f" by {rater}" if rater else ""
            raise UserError(f"{at}: duplicate rating for {utt} / {sys_}{who} (first at row {seen[key]})")
        seen[key] = r.get("_line", i)
        note = r.get("note")
        row = {
            "utt_id": utt,
            "system": sys_,
            "score": int(score) if score.is_integer() else score,
            "note": str(note) if note not in (None, "") else None,
        }
        if rater is not None:
            row["rater"] = rater
        out.append(row)
    if not out:
        raise UserError(f"{where}: no ratings in the file")
    return out


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "system" not in reader.fieldnames or "score" not in reader.fieldnames:
                raise UserError(f"{path}: CSV header must have utt_id (or item), system, score[, note]")
            return [{**row, "_line": reader.line_num} for row in reader]
    if suffix in {".yaml", ".yml"}:
        import re

        from ttsbench.yamlload import YamlError, load_yaml  # duplicate keys, tabs, control characters refused

        try:
            data = load_yaml(path, "ratings file")
        except YamlError as exc:
            m = re.match(r"^(.*):(\d+):(\d+): not valid YAML: (.*)$", str(exc))
            raise UserError(
                f"{m[1]}: YAML syntax error at line {m[2]}, column {m[3]}: {m[4]}" if m else str(exc)
            ) from None
        if isinstance(data, dict):
            data = data.get("ratings")
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise UserError(f"{path}: expected a list of {{utt_id, system, score, note}} (or 'ratings:' list)")
        return data
    raise UserError(f"{path}: unknown ratings format {suffix!r}; use .csv or .yaml")


def ratings_document(
    run: RunDir, rows: list[dict[str, Any]], source: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "version": 1,
        "run_id": run.run_id,
        "created_at": utc_now(),
        "source": source,
        "question": QUESTION,
        "scale": list(SCALE),
        "ratings": rows,
        "stats": rating_stats(rows),
        **(extra or {}),
    }


def write_ratings(run: RunDir, doc: dict[str, Any]) -> Path:
    p = write_json_atomic(ratings_path(run), doc)
    scores = dict(run.doc.get("scores") or {})
    scores["ratings"] = {
        "path": f"scores/{RATINGS_NAME}",
        "source": doc["source"],
        "per_system": doc["stats"]["per_system"],
    }
    run.update_slot("scores", scores)
    return p


def import_ratings(run: RunDir, path: Path, force: bool = False) -> Path:
    if ratings_path(run).exists() and not force:
        raise UserError(f"{ratings_path(run)} exists; pass --force to replace it")
    rows = validate_rows(run, read_rows(path), str(path))
    return write_ratings(run, ratings_document(run, rows, f"import:{path.name}"))


# ---------------------------------------------------------------- listening sessions, one file per rater
def raters_dir(run: RunDir) -> Path:
    return run.scores_dir / RATERS_DIR


def rater_sessions(run: RunDir, rater: str) -> list[Path]:
    d = raters_dir(run) / rater
    return sorted(d.glob("*.json")) if d.is_dir() else []


def save_rater_session(run: RunDir, doc: dict[str, Any]) -> Path:
    """Write one submitted session; never replaces one (a session id is used once)."""
    p = raters_dir(run) / doc["rater"] / f"{doc['session']}.json"
    if p.exists():
        raise UserError(f"{p} exists: a session is submitted once; start a new session")
    return write_json_atomic(p, doc)


def latest_sessions(run: RunDir) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    d = raters_dir(run)
    for f in sorted(d.glob("*/*.json")) if d.is_dir() else []:
        doc = read_json(f)
        prev = out.get(doc["rater"])
        if prev is None or str(doc["submitted_at"]) >= str(prev["submitted_at"]):
            out[doc["rater"]] = doc
    return out


def aggregate_listen(run: RunDir) -> Path:
    """Rebuild scores/ratings.json from every rater's latest session (unreliable raters left out)."""
    sessions = latest_sessions(run)
    used = {r: d for r, d in sessions.items() if not d.get("unreliable")}
    excluded = [{"rater": r, "flags": d.get("flags", [])} for r, d in sorted(sessions.items()) if r not in used]
    rows = [row for _r, d in sorted(used.items()) for row in d["ratings"]]
    extra = {
        "raters": sorted(used),
        "excluded_raters": excluded,
        "sessions": {r: f"scores/{RATERS_DIR}/{r}/{d['session']}.json" for r, d in sorted(sessions.items())},
    }
    if not rows:
        ratings_path(run).unlink(missing_ok=True)
        scores = dict(run.doc.get("scores") or {})
        scores.pop("ratings", None)
        run.update_slot("scores", scores or None)
        return ratings_path(run)
    return write_ratings(run, ratings_document(run, rows, "listen", extra))
