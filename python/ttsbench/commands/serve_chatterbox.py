"""``ttsbench serve-chatterbox``: the Chatterbox speech server (runs inside the chatterbox venv on a host)."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve-chatterbox", help="serve Chatterbox over the OpenAI-style speech API (chatterbox venv)")
    p.add_argument("--weights", default="hub", help="'hub' (ResembleAI/chatterbox) or a local checkpoint directory")
    p.add_argument(
        "--weights-label",
        default=None,
        help="what /health and results call the weights: hub, local or random-init (default: guessed)",
    )
    p.add_argument("--reference", required=True, help="reference voice WAV (≥ 1 s of speech); the server's one voice")
    p.add_argument("--voice", default="", help="name the voice answers to (default: the reference file's stem)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: local only)")
    p.add_argument("--port", type=int, default=8772)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument(
        "--stft-patch",
        choices=("auto", "on", "off"),
        default="auto",
        help="Blackwell STFT patch: auto = on for compute capability ≥ 12 or a failing self-test",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="cap on speech tokens per sentence (needed for random-init weights, which never stop)",
    )
    p.add_argument("--cfg-weight", type=float, default=0.3)
    p.add_argument("--exaggeration", type=float, default=0.3)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--max-chars", type=int, default=2000, help="longer 'input' gets HTTP 413")
    p.add_argument("--seed", type=int, default=None, help="fixed torch seed per request (reproducible audio)")
    p.add_argument("--model-name", default="chatterbox", help="model id reported by /v1/models")
    p.add_argument(
        "--strict",
        action="store_true",
        help="answer 400 to a model or voice name not configured (default: lenient, any model and voice "
        "name is taken and spoken with the reference voice, as OpenAI-style consumers send tts-1/alloy)",
    )
    p.add_argument(
        "--accept-model",
        action="append",
        default=[],
        metavar="NAME",
        help="another model name to accept under --strict (repeatable), e.g. tts-1",
    )
    p.add_argument(
        "--voice-alias",
        action="append",
        default=[],
        metavar="NAME",
        help="another name of the reference voice under --strict (repeatable), e.g. alloy",
    )
    p.add_argument("--token-file", default=None, help="file holding a bearer token; requests without it get 401")
    p.add_argument(
        "--fast",
        choices=("auto", "on", "off"),
        default="auto",
        help="fast path (graph-captured T3, chunked streaming): auto = on where CUDA is present",
    )
    p.add_argument("--fast-dtype", choices=("fp32", "bf16"), default="fp32", help="fast path T3 dtype")
    p.add_argument(
        "--t3-prefill-graphs",
        choices=("on", "off"),
        default="off",
        help="fast path with --batch-slots: replay a request's prefill from CUDA graphs (prefix padded to a "
        "multiple of 32). Opt-in: c=1 first audio 12 ms earlier on an H100, but one server hung at c=4",
    )
    p.add_argument(
        "--t3-attn",
        choices=("fused", "eager"),
        default="fused",
        help="fast path on CUDA: a T3 decode step's attention as one Triton kernel per layer (checked against "
        "the eager form at start-up, which it falls back to) or the eager form (default fused)",
    )
    p.add_argument(
        "--first-chunk-tokens",
        type=int,
        default=12,
        help="fast streaming: send audio once this many speech tokens are vocoded (default 12)",
    )
    p.add_argument(
        "--chunk-tokens",
        type=int,
        default=50,
        help="fast streaming: speech tokens per later chunk (25 = 1 s of audio; default 50). Each chunk re-runs "
        "the flow over the reference prompt, so larger chunks cost less GPU per audio second",
    )
    p.add_argument(
        "--batch-slots",
        type=int,
        default=4,
        help="fast path: decode up to this many concurrent requests together (batched T3 steps, "
        "batched vocoding); 0 = one request at a time (default 4)",
    )
    p.add_argument(
        "--hift",
        choices=("upstream", "sync-free", "graph"),
        default="graph",
        help="fast path on CUDA, the HiFT vocoder: upstream = as released; sync-free = no blocking host->GPU "
        "copies, bit-equal to upstream; graph (default) = sync-free and replayed from a CUDA graph per chunk shape: "
        "bit-equal to eager HiFT under deterministic cuDNN, and otherwise as close to upstream as upstream is to "
        "itself (docs/benchmarks/hift-graph-diff-h100.json); first audio and c=4 throughput better on the GPUs "
        "measured (docs/benchmarks/README.md)",
    )
    p.add_argument(
        "--vocoder-batching",
        choices=("on", "off"),
        default="on",
        help="fast path with --batch-slots > 1: vocode the due chunks of concurrent streams in one batched S3Gen "
        "call (on) or one after another (off; default on)",
    )
    p.add_argument(
        "--vocoder-preempt",
        choices=("on", "off"),
        default="on",
        help="fast path with batched vocoding: a request's first chunk is vocoded between two CFM steps of a "
        "batch of later chunks instead of after the whole batch (the batch is paced a step or two ahead on the "
        "GPU; its numbers are unchanged). Default on; with --vocoder-yield on it took c=4 first audio on the H100 "
        "from ~415 to ~300 ms for 9-14 %% less c=4 throughput (docs/benchmarks/README.md)",
    )
    p.add_argument(
        "--vocoder-yield",
        choices=("on", "off"),
        default="on",
        help="fast path with batched vocoding: while a request decodes toward its first chunk, batches of later "
        "chunks wait (at most 250 ms; one in progress pauses between CFM steps), so the new request's first "
        "tokens have the GPU. Default on; use it with --vocoder-preempt on (alone it made c=4 first audio worse: "
        "the first chunk then waits for the held batch). Both off: throughput first",
    )
    p.add_argument(
        "--vocoder-catch-up",
        choices=("on", "off"),
        default="on",
        help="fast path with batched vocoding: a stream whose T3 ran ahead of its vocoding sends every chunk due "
        "by then in one batched call instead of one call each (a call costs about the same for one row as for "
        "four). Default on; off: one chunk per call",
    )
    p.add_argument(
        "--vocoder-deadlines",
        choices=("on", "off"),
        default="off",
        help="fast path with batched vocoding: later chunks go earliest playback deadline first (when a listener "
        "who started at the first chunk runs out of audio), and batches of them yield to a new request's first "
        "tokens only while every stream keeps 0.4 s of audio to play. Meant against the c=4 playback stalls "
        "measured with the defaults (docs/benchmarks/README.md); not measured yet, so off by default",
    )
    p.add_argument(
        "--s3-compile",
        choices=("on", "off"),
        default="off",
        help="fast path on CUDA: run S3Gen's CFM estimator through torch.compile (fewer, fused kernels; NOT "
        "bit-equal to upstream: checked against eager at start-up and refused above 1e-3 relative RMS; "
        "/health shows the measured difference). Needs --vocoder-batching off or --batch-slots 0 (batched "
        "vocoding with it crashed or hung at concurrency 4). Default off",
    )
    p.add_argument(
        "--pause-t3-first-chunk",
        choices=("on", "off"),
        default="on",
        help="fast path with --batch-slots > 0: hold T3 steps while a request's first chunk is vocoded, so its "
        "first audio is not slowed by other work on the GPU (on), or keep decoding (off; default on)",
    )
    p.add_argument(
        "--fast-max-len",
        type=int,
        default=2048,
        help="fast path: KV cache length per request (prefix + speech tokens; default 2048)",
    )
    p.add_argument(
        "--tokens-per-char",
        type=float,
        default=None,
        help="cap each sentence at max(25, round(X * characters)) speech tokens (random-init weights "
        "never stop; 1.786 = the fast-path benchmark's 25 tokens per 14 characters)",
    )
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ttsbench.chatterbox.server import EXIT_GPU_FAILED, ServerConfig, serve
    from ttsbench.errors import UserError

    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--token-file {args.token_file}: {exc.strerror}") from exc
        if not token:
            raise UserError(f"--token-file {args.token_file} is empty")
    if args.batch_slots < 0:
        raise UserError("--batch-slots must be 0 (no batching) or a positive number")
    if args.fast_max_len < 64:
        raise UserError("--fast-max-len must be at least 64")
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise UserError("--max-new-tokens must be a positive number")
    if args.first_chunk_tokens < 1 or args.chunk_tokens < 1:
        raise UserError("--first-chunk-tokens and --chunk-tokens must be positive numbers of speech tokens")
    if args.s3_compile == "on" and args.batch_slots > 1 and args.vocoder_batching == "on":
        # measured on the H100, 2026-12-07 (docs/benchmarks/chatterbox-http-h100-compile.json): alone (c=1) the
        # compiled estimator served every request, first audio 147-151 ms; with batched vocoding at c=4 one run
        # hit an illegal memory access and another hung
        raise UserError(
            "--s3-compile on is not safe with batched vocoding: at concurrency 4 it crashed the GPU context "
            "(illegal memory access) or hung on the H100. Add --vocoder-batching off (chunks are vocoded one at a "
            "time; T3 still decodes concurrent requests together), or --batch-slots 0, or leave --s3-compile off"
        )
    label = args.weights_label
    if label is None:
        label = "hub" if args.weights == "hub" else _guess_label(Path(args.weights))
    cfg = ServerConfig(
        weights=args.weights,
        weights_label=label,
        reference=args.reference,
        voice=args.voice,
        host=args.host,
        port=args.port,
        device=args.device,
        stft_patch=args.stft_patch,
        max_new_tokens=args.max_new_tokens,
        cfg_weight=args.cfg_weight,
        exaggeration=args.exaggeration,
        temperature=args.temperature,
        max_chars=args.max_chars,
        seed=args.seed,
        model_name=args.model_name,
        token=token,
        verbose=args.verbose,
        fast=args.fast,
        fast_dtype=args.fast_dtype,
        t3_attn=args.t3_attn,
        t3_prefill_graphs=args.t3_prefill_graphs == "on",
        first_chunk_tokens=args.first_chunk_tokens,
        chunk_tokens=args.chunk_tokens,
        batch_slots=args.batch_slots,
        batch_vocoder=args.vocoder_batching == "on",
        vocoder_preempt=args.vocoder_preempt == "on",
        vocoder_yield=args.vocoder_yield == "on",
        vocoder_catch_up=args.vocoder_catch_up == "on",
        vocoder_deadlines=args.vocoder_deadlines == "on",
        hift=args.hift,
        pause_t3_first_chunk=args.pause_t3_first_chunk == "on",
        s3_compile=args.s3_compile == "on",
        fast_max_len=args.fast_max_len,
        tokens_per_char=args.tokens_per_char,
        strict=args.strict,
        accept_models=tuple(args.accept_model),
        voice_aliases=tuple(args.voice_alias),
    )
    rc = serve(cfg)
    if rc == EXIT_GPU_FAILED:
        # the GPU context is broken: skip the interpreter's teardown (CUDA frees on a failed context can crash
        # or hang it, and the supervisor restarts the server on exactly this status)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _guess_label(weights_dir: object) -> str:
    from ttsbench.chatterbox.checkpoint import read_marker

    marker = read_marker(str(weights_dir)) or {}
    return "random-init" if marker.get("weights") == "random-init" else "local"
