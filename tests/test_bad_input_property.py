"""Property: an invalid run folder, rule file or utterance file ends in exit 2, one line, no traceback, no change.

Hypothesis mutates valid inputs in ways that are invalid *by construction* (a wrong type where the schema
fixes one, a required key removed, NaN, a path out of the folder, a duplicate id or key, a tab, a NUL,
truncated JSON ...) and runs the real command in-process through ``cli.main``: an uncaught exception (a
traceback) fails the test, as does any other exit code, a message of more than one line, or any file of the
folder changing. Bounded (few examples, deadline) so it runs in seconds in CI.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.cli import main

REPO = Path(__file__).resolve().parents[1]
SETTINGS = settings(
    max_examples=30,
    deadline=4000,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAVE_ESPEAK:
        pytest.skip("espeak-ng builds the valid run folder")
    return make_run(
        tmp_path_factory.mktemp("valid"),
        kind="bench-voxtral",
        systems={
            "voxtral@titan": ("voxtral", "titan", ["-v", "en-us", "-s", "165"]),
            "chatterbox@panda": ("chatterbox", "panda", ["-v", "en-gb", "-s", "140"]),
        },
    )


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]):
            p = Path(dirpath, name)
            data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
            out[str(p.relative_to(root))] = (hashlib.sha256(data).hexdigest(), p.lstat().st_mtime_ns)
    return out


@contextlib.contextmanager
def _copy(src: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="ttsbench-prop-"))
    try:
        dst = tmp / src.name
        shutil.copytree(src, dst, symlinks=True)
        yield dst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(argv)  # an uncaught exception here is a traceback for the user: the test fails
    return rc, err.getvalue()


def _assert_clean_refusal(rc: int, err: str, command: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ttsbench {command}: error: "), lines[0]
    assert "Traceback" not in err


# ---------------------------------------------------------------- results.json mutations

WRONG: dict[str, list[Any]] = {  # values the schema (or the semantic checks) forbid at these places
    "schema_version": ["1", None, 2, [], 1.5],
    "run_id": [5, None, "", "a b", "../x"],
    "kind": ["bench-magic", 3, None],
    "complete": ["no", 0, None],
    "started_at": [5, None, "yesterday", "2026-13-01T00:00:00Z"],
    "systems": [{}, "x", None, 3],
    "gemma": [{"mode": "pause"}, "x", 5, []],
    "scores": ["x", 5, [], {"objective": {"path": "../../etc/passwd"}}],
    "verdict": ["x", 5, []],
    "system.system_id": ["nohost", 5, None, "a@b@c", ""],
    "system.engine": [None, "x", {"name": "v"}],
    "system.utterances": [None, {}, "x"],
    "system.summary": [None, [], {"n": 1}],
    "row.utt_id": [5, None, "a b", ""],
    "row.ok": ["yes", None, 1],
    "row.wav": ["../../outside.wav", "/etc/hostname", 5, "wavs/../../x.wav"],
    "row.ttfa_ms": ["fast", [], {}, True, -1.0],
    "row.total_ms": ["x", -5, [1]],
    "row.audio_s": [0, -1.0, "x"],
    "row.rtf": ["x", -0.5],
    "row.concurrency": [0, "1", None, 1.5],
    "row.sample_rate": [-5, 0, "x", 22050.5],
    "row.error": [5, "oops"],  # an ok row must not carry an error
    "row.http_status": ["200", 200.5],
    "summary.n": [-1, "x", 1.5, None],
    "summary.p50_ttfa_ms": ["x", []],
}
REQUIRED_TOP = [
    "schema_version",
    "run_id",
    "kind",
    "started_at",
    "finished_at",
    "complete",
    "systems",
    "gemma",
    "scores",
    "verdict",
]
REQUIRED_ROW = [
    "utt_id",
    "text",
    "wav",
    "ok",
    "error",
    "http_status",
    "ttfa_ms",
    "t_first_nonsilent_ms",
    "total_ms",
    "audio_s",
    "rtf",
    "sample_rate",
    "concurrency",
]


def _set(doc: dict, where: str, value: Any, si: int, ri: int) -> None:
    scope, _, key = where.rpartition(".")
    target = {
        "": doc,
        "system": doc["systems"][si],
        "row": doc["systems"][si]["utterances"][ri],
        "summary": doc["systems"][si]["summary"],
    }[scope]
    target[key] = value


@st.composite
def broken_results(draw: st.DrawFn, doc: dict, text: str) -> tuple[str, Callable[[Path], None]]:
    """(what was done, how to apply it to a run folder) — always an invalid folder."""
    n_sys = len(doc["systems"])
    si = draw(st.integers(0, n_sys - 1))
    ri = draw(st.integers(0, len(doc["systems"][si]["utterances"]) - 1))
    kind = draw(st.sampled_from(["wrong", "drop", "nan", "truncate", "dup_system", "dup_row", "symlink", "bytes"]))

    def write(d: Any) -> Callable[[Path], None]:
        return lambda run: (run / "results.json").write_text(json.dumps(d, allow_nan=True))

    d = copy.deepcopy(doc)
    if kind == "wrong":
        where = draw(st.sampled_from(sorted(WRONG)))
        value = draw(st.sampled_from(WRONG[where]))
        _set(d, where, value, si, ri)
        return f"{where} = {value!r}", write(d)
    if kind == "drop":
        top = draw(st.booleans())
        key = draw(st.sampled_from(REQUIRED_TOP if top else REQUIRED_ROW))
        (d if top else d["systems"][si]["utterances"][ri]).pop(key)
        return f"drop {key}", write(d)
    if kind == "nan":
        key = draw(st.sampled_from(["ttfa_ms", "total_ms", "rtf", "audio_s"]))
        d["systems"][si]["utterances"][ri][key] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        return f"{key} non-finite", write(d)
    if kind == "truncate":
        cut = draw(st.integers(0, text.rindex("}") - 1))
        return f"truncate at {cut}", lambda run: (run / "results.json").write_text(text[:cut])
    if kind == "dup_system":
        d["systems"].append(copy.deepcopy(d["systems"][si]))
        return "duplicate system", write(d)
    if kind == "dup_row":
        d["systems"][si]["utterances"].append(copy.deepcopy(d["systems"][si]["utterances"][ri]))
        return "duplicate row", write(d)
    if kind == "symlink":
        wav = d["systems"][si]["utterances"][ri]["wav"]

        def apply(run: Path) -> None:
            outside = run.parent / "outside.wav"
            shutil.copyfile(run / wav, outside)
            (run / wav).unlink()
            (run / wav).symlink_to(outside)

        return "wav symlinked out of the folder", apply
    raw = draw(st.binary(min_size=1, max_size=64))
    return "random bytes", lambda run: (run / "results.json").write_bytes(b"\xff" + raw)


RUN_COMMANDS = [
    ["validate"],
    ["run-folder", "check"],
    ["run-folder", "finish"],
    ["score"],
    ["verdict"],
    ["report"],
    ["ratings", "import", "@RUN", "@RATINGS"],
    ["run-folder", "merge", "@GOOD", "@RUN"],
]


def test_invalid_run_folders_are_refused_cleanly(valid_run: Path, tmp_path: Path) -> None:
    doc = json.loads((valid_run / "results.json").read_text())
    text = (valid_run / "results.json").read_text()
    ratings = tmp_path / "r.csv"
    ratings.write_text("utt_id,system,score\nu01,voxtral@titan,4\n")

    @SETTINGS
    @given(mutation=broken_results(doc, text), command=st.sampled_from(RUN_COMMANDS))
    def check(mutation: tuple[str, Callable[[Path], None]], command: list[str]) -> None:
        _what, apply = mutation
        with _copy(valid_run) as run, _copy(valid_run) as good:
            apply(run)
            before, before_good = _snapshot(run), _snapshot(good)
            subs = {"@RUN": str(run), "@RATINGS": str(ratings), "@GOOD": str(good)}
            argv = [subs.get(a, a) for a in command]
            if "@RUN" not in command:
                argv.append(str(run))
            rc, err = _run_cli(argv)
            _assert_clean_refusal(rc, err, command[0])
            assert _snapshot(run) == before and _snapshot(good) == before_good

    check()


# ---------------------------------------------------------------- rule files


@st.composite
def broken_rules(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    keyed = [
        i
        for i, ln in enumerate(lines)
        if ln.strip() and not ln.lstrip().startswith(("#", "-")) and ":" in ln and not ln.startswith(" " * 6)
    ]
    kind = draw(st.sampled_from(["dup", "tab", "nul", "drop", "unknown", "not_mapping"]))
    if kind == "dup":  # a key line repeated right after itself: a duplicate key in that mapping
        i = draw(st.sampled_from(keyed))
        indent = len(lines[i]) - len(lines[i].lstrip())
        key = lines[i].split(":", 1)[0].strip()
        return "".join(lines[: i + 1]) + " " * indent + f"{key}: 1\n" + "".join(lines[i + 1 :])
    if kind == "tab":
        i = draw(st.integers(0, len(lines) - 1))
        return "".join(lines[:i]) + "\t" + "".join(lines[i:])
    if kind == "nul":
        pos = draw(st.integers(0, len(text)))
        return text[:pos] + "\x00" + text[pos:]
    if kind == "drop":
        key = draw(st.sampled_from(["rule_version", "name", "inputs", "outcomes", "default"]))
        return text.replace(f"\n{key}:", f"\n_dropped_{key}:", 1)
    if kind == "unknown":
        return text + draw(st.sampled_from(["weight: 2\n", "extra_key: [1, 2]\n"]))
    return draw(st.sampled_from(["", "- a\n- b\n", "just text\n", "42\n"]))


def test_invalid_rule_files_are_refused_cleanly(valid_run: Path, tmp_path: Path) -> None:
    text = (REPO / "files" / "decision-rules" / "voxtral.yaml").read_text(encoding="utf-8")
    rules = tmp_path / "rules.yaml"

    @SETTINGS
    @given(body=broken_rules(text))
    def check(body: str) -> None:
        rules.write_text(body, encoding="utf-8")
        with _copy(valid_run) as run:
            before = _snapshot(run)
            rc, err = _run_cli(["verdict", str(run), "--rules", str(rules)])
            _assert_clean_refusal(rc, err, "verdict")
            assert _snapshot(run) == before

    check()


# ---------------------------------------------------------------- utterance files

UTTERANCES = (REPO / "files" / "utterances.yaml").read_text(encoding="utf-8")


@st.composite
def broken_utterances(draw: st.DrawFn) -> str:
    lines = UTTERANCES.splitlines(keepends=True)
    entries = [i for i, ln in enumerate(lines) if ln.startswith("  - id: ")]
    i = draw(st.sampled_from(entries))
    kind = draw(
        st.sampled_from(
            [
                "dup_key",
                "dup_id",
                "tab",
                "nul_literal",
                "nul_escape",
                "empty",
                "not_str",
                "bad_id",
                "no_list",
                "truncate_flow",
            ]
        )
    )
    if kind == "dup_key":
        return "".join(lines[: i + 1]) + "    id: again\n" + "".join(lines[i + 1 :])
    if kind == "dup_id":
        return UTTERANCES + lines[i] + '    text: "again"\n'
    if kind == "tab":
        j = draw(st.integers(i, len(lines) - 1))
        return "".join(lines[:j]) + "\t" + "".join(lines[j:])
    if kind == "nul_literal":
        pos = draw(st.integers(0, len(UTTERANCES)))
        return UTTERANCES[:pos] + "\x00" + UTTERANCES[pos:]
    if kind == "nul_escape":
        return UTTERANCES + '  - id: zz\n    text: "before\\0after"\n'
    if kind == "empty":
        return UTTERANCES + "  - id: zz\n    text: " + draw(st.sampled_from(['""', "' '", '"\\t"'])) + "\n"
    if kind == "not_str":
        return UTTERANCES + "  - id: zz\n    text: " + draw(st.sampled_from(["5", "[1, 2]", "{a: 1}", "null"])) + "\n"
    if kind == "bad_id":
        return UTTERANCES + "  - id: " + draw(st.sampled_from(["'a b'", "5", "'../x'", "''"])) + "\n    text: hi\n"
    if kind == "no_list":
        return draw(st.sampled_from(["utterances: {}\n", "utterances: []\n", "other: 1\n", "", "42\n"]))
    return UTTERANCES + "  - {id: zz, text: " + draw(st.sampled_from(["'open", "[x", "x"])) + "\n"


def test_invalid_utterance_files_are_refused_cleanly(tmp_path: Path) -> None:
    f = tmp_path / "u.yaml"
    run_dir = tmp_path / "run"

    @SETTINGS
    @given(body=broken_utterances())
    def check(body: str) -> None:
        f.write_text(body, encoding="utf-8")
        rc, err = _run_cli(
            ["bench-http", "http://127.0.0.1:9", "--utterances", str(f), "--run-dir", str(run_dir), "--no-progress"]
        )
        _assert_clean_refusal(rc, err, "bench-http")
        assert not run_dir.exists()

    check()
