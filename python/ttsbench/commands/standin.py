"""``ttsbench standin tts|llm``: run a STAND-IN server (espeak-ng speech server / fake Gemma)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("standin", help="run a stand-in server (tts: espeak-ng speech API; llm: fake Gemma)")
    kinds = p.add_subparsers(dest="standin_kind", metavar="KIND", required=True)

    t = kinds.add_parser("tts", help="STAND-IN for vllm-omni+Voxtral: OpenAI-style /v1/audio/speech via espeak-ng")
    t.add_argument("--host", default="127.0.0.1")
    t.add_argument("--port", type=int, default=8004)
    t.add_argument(
        "--first-chunk-delay-ms",
        type=float,
        default=0.0,
        help="first audio sample leaves this many ms after the request arrived",
    )
    t.add_argument("--chunk-ms", type=float, default=80.0, help="audio per streamed chunk")
    t.add_argument("--chunk-pacing-ms", type=float, default=0.0, help="wait between streamed chunks")
    t.add_argument("--sample-rate", type=int, default=24000)
    t.add_argument("--model", default="standin-voxtral-espeak", help="model id served on /v1/models")
    t.add_argument("--voice-label", default="neutral_female", help="voice name listed on /v1/audio/voices")
    t.add_argument("--espeak-voice", default="en-us")
    t.add_argument("--early-header", action="store_true", help="send the WAV header before the delay")
    t.add_argument(
        "--fault",
        default=None,
        choices=["http-500", "truncate-header", "truncate-sample", "zero-audio"],
        help="inject this fault into every request (per request: header X-Standin-Fault)",
    )
    t.add_argument(
        "--contract",
        default=None,
        help="vllm-omni contract JSON (ttsbench/upstream/contracts/<v>.json): refuse and stream as "
        "that version does for Voxtral",
    )
    t.add_argument(
        "--api",
        choices=["openai", "text-json"],
        default="openai",
        help="openai: /v1/audio/speech (vllm-omni); text-json: STAND-IN production server, POST --text-json-path "
        'with {"text": ...} answers one WAV (a request shape of its own, spoken to through a request template)',
    )
    t.add_argument("--text-json-path", default="/tts", help="route of the text-json API")
    t.add_argument("--verbose", action="store_true")
    t.set_defaults(func=_run_tts)

    llm = kinds.add_parser("llm", help="STAND-IN for the production Gemma: /v1/models + /v1/chat/completions")
    llm.add_argument("--host", default="127.0.0.1")
    llm.add_argument("--port", type=int, default=8003)
    llm.add_argument("--latency-ms", type=float, default=0.0, help="(runtime: POST /standin/latency)")
    llm.add_argument("--model", default="standin-gemma")
    llm.add_argument("--verbose", action="store_true")
    llm.set_defaults(func=_run_llm)


def _serve(server, what: str) -> int:
    import sys

    host, port = server.server_address[:2]
    print(f"ttsbench standin {what} (STAND-IN) listening on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _bind(factory, cfg, what: str):
    from ttsbench.errors import UserError

    try:
        return factory(cfg)
    except OSError as exc:
        raise UserError(
            f"cannot listen on {cfg.host}:{cfg.port} for standin {what}: {exc.strerror or exc}", exit_code=3
        ) from exc


def _run_tts(args: argparse.Namespace) -> int:
    import shutil

    from ttsbench.errors import UserError
    from ttsbench.standin.tts import TtsConfig, make_server

    if shutil.which("espeak-ng") is None:
        raise UserError("espeak-ng not found on PATH; install it (apt-get install espeak-ng)")
    if args.chunk_ms <= 0 or args.first_chunk_delay_ms < 0 or args.chunk_pacing_ms < 0:
        raise UserError("--chunk-ms must be > 0; delays must be >= 0")
    cfg = TtsConfig(
        host=args.host,
        port=args.port,
        first_chunk_delay_ms=args.first_chunk_delay_ms,
        chunk_ms=args.chunk_ms,
        chunk_pacing_ms=args.chunk_pacing_ms,
        sample_rate=args.sample_rate,
        model=args.model,
        voice_label=args.voice_label,
        espeak_voice=args.espeak_voice,
        fault=args.fault,
        early_header=args.early_header,
        verbose=args.verbose,
        contract=_load_contract(args.contract) if args.contract else None,
        api=args.api,
        text_json_path=args.text_json_path,
    )
    return _serve(_bind(make_server, cfg, "tts"), "tts")


def _load_contract(path: str) -> dict:
    import json
    from pathlib import Path

    from ttsbench.errors import UserError

    try:
        doc = json.loads(Path(path).read_text())
        doc["speech"]["stream_formats"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--contract {path}: not a vllm-omni contract JSON ({exc})") from exc
    return doc


def _run_llm(args: argparse.Namespace) -> int:
    from ttsbench.standin.llm import LlmConfig, make_server

    cfg = LlmConfig(host=args.host, port=args.port, latency_ms=args.latency_ms, model=args.model, verbose=args.verbose)
    return _serve(_bind(make_server, cfg, "llm"), "llm")
