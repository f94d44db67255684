"""``ttsbench bench-http URL``: time an OpenAI-style speech server (vllm-omni, or the stand-in)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-http", help="benchmark a streaming /v1/audio/speech server: TTFA, RTF, WAVs")
    p.add_argument(
        "url",
        help="server base URL (http://titan:8004) or the full /v1/audio/speech URL; "
        "connected to directly (HTTP(S)_PROXY is not used: a benchmark times the server, not a proxy)",
    )
    p.add_argument("--utterances", default=None, help="utterances YAML (default: files/utterances.yaml)")
    p.add_argument("--only", default=None, help="comma-separated utterance ids to use")
    p.add_argument(
        "-n",
        "--requests",
        type=int,
        default=None,
        help="timed requests per concurrency level (default: one per utterance)",
    )
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests, excluded from the results")
    p.add_argument("--concurrency", default="1", help="levels to sweep, e.g. 1,2,4,8")
    p.add_argument(
        "--stream",
        choices=["audio", "sse", "none"],
        default=None,
        help="audio: raw bytes (stream_format=audio); sse: speech.audio.delta events; none "
        "(default: audio, or what --vllm-omni-version streams)",
    )
    p.add_argument(
        "--response-format",
        choices=["wav", "pcm"],
        default=None,
        help="default: wav, or for --vllm-omni-version a format that version streams for the engine",
    )
    p.add_argument(
        "--pcm-sample-rate",
        type=int,
        default=None,
        help="declared rate of raw PCM responses (default 24000, or the engine's rate in the contract)",
    )
    p.add_argument(
        "--vllm-omni-version",
        default=None,
        help="check the request against this vllm-omni release's speech API (stored contract, e.g. "
        "0.30.0) and pick a response format it streams for --engine; refused before any request",
    )
    p.add_argument("--pcm-format", choices=["s16le", "s32le", "f32le", "u8"], default="s16le")
    p.add_argument("--model", default=None)
    p.add_argument("--voice", default=None)
    p.add_argument("--reference", default=None, help="reference voice WAV for cloning (sent as a data URL)")
    p.add_argument("--reference-field", default="ref_audio", help="payload field for the reference")
    p.add_argument("--reference-rate", type=int, default=24000, help="resample the reference to this rate")
    p.add_argument(
        "--payload-extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra JSON field (VALUE parsed as JSON when it parses, else a string)",
    )
    p.add_argument(
        "--request-template",
        default=None,
        metavar="FILE|openai",
        help="speak any TTS HTTP API: a template file (method, path, headers, body with {text}, {voice}, "
        "{reference_audio_...}, response kind wav|pcm|json-base64|url; see ttsbench.reqtemplate) or the "
        "preset openai (built from --stream/--response-format/--model/--voice/--reference/"
        "--payload-extra); URL is then the server's base URL",
    )
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="extra HTTP header")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds")
    p.add_argument("--engine", default="http", help="engine label (wavs/<engine>/<host>/)")
    p.add_argument("--engine-version", default=None)
    p.add_argument("--install-label", default=None)
    p.add_argument("--host-label", default=None, help="host label (default: the URL's host name)")
    p.add_argument("--standin", action="store_true", help="the server is a stand-in (labelled in results)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="run folder to write into (an existing results.json gets this system added)",
    )
    p.add_argument("--runs-root", default="runs", help="where a new run folder is made (without --run-dir)")
    p.add_argument("--kind", default="bench-http", help="results.json kind for a new run folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _kv(items: list[str], what: str, parse_json: bool) -> dict:
    import json

    from ttsbench.errors import UserError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} {item!r}: expected KEY=VALUE")
        if parse_json:
            try:
                out[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                out[key.strip()] = value
        else:
            out[key.strip()] = value
    return out


def _template_values(args: argparse.Namespace, ref: object) -> dict[str, str | None]:
    from ttsbench import reqtemplate

    vals = reqtemplate.values("", voice=args.voice, model=args.model, reference=ref)
    vals.pop("text")
    return vals


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import sys
    from urllib.parse import urlsplit

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ttsbench import results
    from ttsbench.audio import write_wav_atomic
    from ttsbench.errors import UserError
    from ttsbench.httpbench import (
        RunPlan,
        RunState,
        ServerUnreachable,
        SpeechTarget,
        WarmupFailed,
        describe_request,
        endpoint_url,
        run_plan,
    )
    from ttsbench.metrics import summarize
    from ttsbench.outputs import check_outputs, copy_reference
    from ttsbench.utterances import load_utterances

    console = Console(stderr=True)
    url = endpoint_url(args.url) if not args.request_template else args.url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{args.url}: not an http(s) URL")
    try:
        levels = tuple(int(x) for x in args.concurrency.split(",") if x.strip())
    except ValueError as exc:
        raise UserError(f"--concurrency {args.concurrency!r}: expected numbers like 1,2,4,8") from exc
    if not levels or min(levels) < 1:
        raise UserError("--concurrency levels must be >= 1")
    utts = load_utterances(args.utterances)
    if args.only:
        wanted = [u.strip() for u in args.only.split(",") if u.strip()]
        known = {u.utt_id for u in utts}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise UserError(f"--only: unknown utterance id(s) {', '.join(missing)}")
        utts = [u for u in utts if u.utt_id in wanted]
    n = args.requests if args.requests is not None else len(utts)
    if n < 1 or args.warmup < 0:
        raise UserError("--requests must be >= 1 and --warmup >= 0")
    ref_url = None
    ref = None
    if args.reference:
        from ttsbench.reference import load_reference

        ref = load_reference(args.reference, args.reference_rate)
        if ref.source_rate != ref.sample_rate:
            console.print(f"reference: resampled {ref.source_rate} Hz → {ref.sample_rate} Hz")
        ref_url = ref.data_url
    if args.vllm_omni_version:
        from ttsbench.upstream.speech_api import SpeechApiError, choose_stream, load_contract

        try:
            contract = load_contract(args.vllm_omni_version)
            choice = choose_stream(contract, args.engine, args.response_format, args.stream, args.pcm_sample_rate)
        except SpeechApiError as exc:
            raise UserError(str(exc)) from exc
        args.response_format, args.stream = choice.response_format, choice.stream
        args.pcm_sample_rate = choice.pcm_sample_rate or 24000
    else:
        contract = None
        args.response_format = args.response_format or "wav"
        args.stream = args.stream or "audio"
        args.pcm_sample_rate = args.pcm_sample_rate or 24000
    template = None
    if args.request_template:
        from ttsbench import reqtemplate

        template = reqtemplate.load(
            args.request_template,
            response_format=args.response_format,
            stream=args.stream,
            pcm_sample_rate=args.pcm_sample_rate,
            pcm_format=args.pcm_format,
            reference_field=args.reference_field,
            with_reference=ref is not None,
            extra=_kv(args.payload_extra, "--payload-extra", True),
        )
        reqtemplate.check_inputs(template, has_reference=ref is not None)
        if template.path and url.endswith(template.path.rstrip("/")) and "{" not in template.path:
            url = url[: -len(template.path.rstrip("/"))]  # the endpoint URL was given: keep the base
    target = SpeechTarget(
        url=url,
        model=args.model,
        voice=args.voice,
        response_format=args.response_format,
        stream=args.stream,
        pcm_sample_rate=args.pcm_sample_rate,
        pcm_format=args.pcm_format,
        reference_field=args.reference_field,
        reference_url=ref_url,
        payload_extra=_kv(args.payload_extra, "--payload-extra", True),
        headers=_kv(args.header, "--header", False),
        timeout_s=args.timeout,
        template=template,
        template_values=_template_values(args, ref) if template is not None else {},
    )
    if contract is not None:
        from ttsbench.upstream.speech_api import SpeechApiError, check_payload

        try:
            check_payload(contract, args.engine, target.payload("check"))
        except SpeechApiError as exc:
            raise UserError(str(exc)) from exc
    if template is not None:
        template.render(url, {**target.template_values, "text": "check"})  # unset placeholders fail here, not later
    host = args.host_label or parts.hostname
    engine = args.engine
    for label in (host, engine):
        if not label.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UserError(f"label {label!r}: use letters, digits, '.', '_' or '-' only")

    # ---- everything this run will write to is checked now, before any timed request ----
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs_root) / results.new_run_id(args.kind)
    existing_doc = check_outputs(run_dir, [Path("wavs") / engine / host / f"{u.utt_id}.wav" for u in utts], ref)
    results_file = run_dir / results.RESULTS_NAME
    checked_stamp = _stamp(results_file)

    plan = RunPlan(requests=n, warmup=args.warmup, concurrency=levels)
    state = RunState()
    started = results.utc_now()
    interrupted = False
    progress = Progress(
        TextColumn("[bold]bench-http[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.no_progress,
        refresh_per_second=4,
    )
    task = progress.add_task(f"{engine}@{host}", total=n * len(levels))
    try:
        with progress:
            asyncio.run(run_plan(target, utts, plan, state, on_row=lambda _m: progress.advance(task)))
    except WarmupFailed as exc:
        raise UserError(f"{url}: {exc} (nothing written)", exit_code=3) from exc
    except ServerUnreachable as exc:
        if not state.rows:
            raise UserError(f"{exc}; is the server running? (nothing written)", exit_code=3) from exc
        state.aborted = str(exc)
    except KeyboardInterrupt:
        interrupted = True

    # ---- write the run folder: WAVs first, then results.json (validated, atomic) ----
    if existing_doc is not None and _stamp(results_file) != checked_stamp:
        existing_doc = results.load_results(run_dir)  # changed while we measured (another system merged in)
    doc = existing_doc if existing_doc is not None else results.new_document(run_dir.name, args.kind)
    if existing_doc is None:
        doc["started_at"] = started
    for utt_id, (samples, sr, row) in state.audio.items():
        rel = Path("wavs") / engine / host / f"{utt_id}.wav"
        write_wav_atomic(run_dir / rel, samples, sr, row.sample_format or "s16le")
        row.wav = rel.as_posix()
    if ref is not None:  # the run folder keeps the voice its rows were cloned from (docs/run-folder.md)
        copy_reference(ref.path, run_dir)
    rows = state.rows
    complete = not interrupted and state.aborted is None
    system = {
        "system_id": f"{engine}@{host}",
        "engine": {
            "name": engine,
            "version": args.engine_version,
            "install": args.install_label,
            "standin": bool(args.standin),
            "weights": "n/a",
        },
        "host": results.remote_host(host),
        "config": {
            "url": url,
            "stream": args.stream,
            "response_format": args.response_format,
            "pcm_sample_rate": args.pcm_sample_rate if args.response_format == "pcm" else None,
            "model": args.model,
            "voice": args.voice,
            "reference": args.reference,
            "payload_extra": target.payload_extra,
            "request_template": template.describe() if template is not None else None,
            "warmup": args.warmup,
            "requests_per_level": n,
            "concurrency": list(levels),
            "measured_from": "controller over HTTP",
            "complete": complete,
            "aborted": state.aborted,
        },
        "utterances": [r.to_dict() for r in rows],
        "summary": summarize(rows),
        "summary_by_concurrency": {str(c): summarize([r for r in rows if r.concurrency == c]) for c in levels},
    }
    results.put_system(doc, system)
    doc["complete"] = complete
    doc["finished_at"] = results.utc_now()
    path = results.write_results(run_dir, doc)
    s = system["summary"]
    print(
        f"{path}: {s['n_ok']}/{s['n']} ok, p50 TTFA {_fmt(s['p50_ttfa_ms'])} ms, "
        f"p50 RTF {_fmt(s['p50_rtf'], 3)}" + (" (STAND-IN)" if args.standin else "")
    )
    if interrupted:
        print(
            f"bench-http: interrupted; kept {len(rows)} measured request(s), marked complete=false",
            file=sys.stderr,
        )
        return 130
    if state.aborted:
        print(
            f"bench-http: error: {state.aborted}; kept {len(rows)} measured request(s), marked complete=false",
            file=sys.stderr,
        )
        return 3
    bad = [r for r in rows if not r.ok]
    if bad:
        first = bad[0]
        utt = next(u for u in utts if u.utt_id == first.utt_id)
        print(
            f"bench-http: error: {len(bad)}/{len(rows)} request(s) failed; first: "
            f"{describe_request(target, utt, first.concurrency, first.request_index)}: {first.error}",
            file=sys.stderr,
        )
        return 1
    return 0


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime, size) of a file, None if absent: did it change while we measured?"""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"
