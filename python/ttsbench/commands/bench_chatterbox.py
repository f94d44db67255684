"""``ttsbench bench-chatterbox``: in-process Chatterbox benchmark (run inside the chatterbox venv)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-chatterbox",
        help="time ChatterboxTTS in this process (needs the chatterbox venv) and write a run folder",
    )
    p.add_argument(
        "--weights",
        default="random-init",
        help="hub (from_pretrained), random-init (build/reuse --checkpoint-dir) or a from_local DIR",
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="where random-init weights live (default ~/.cache/ttsbench/chatterbox-random-init)",
    )
    p.add_argument("--seed", type=int, default=0, help="random-init seed and sampling seed (default 0)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/chatterbox-inprocess-<UTC>)")
    p.add_argument("--host-name", default=None, help="host label in system_id chatterbox@<host> (default: hostname)")
    p.add_argument("--reference", type=Path, default=None, help="reference voice WAV (≥ 1 s); default: built-in conds")
    p.add_argument("--utterances", type=Path, default=None, help="utterances YAML (default files/utterances.yaml)")
    p.add_argument("--only", default=None, help="comma-separated utterance ids, e.g. u01,u02")
    p.add_argument("--warmup", type=int, default=1, help="warm-up syntheses, not timed (default 1)")
    p.add_argument("--runs", type=int, default=1, help="timed passes over the utterances (default 1)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="cap T3 speech tokens (default: none for real weights, 50 for random-init)",
    )
    p.add_argument("--cfg-weight", type=float, default=0.3)
    p.add_argument("--exaggeration", type=float, default=0.3)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument(
        "--stft-patch",
        choices=["auto", "on", "off"],
        default="auto",
        help="Blackwell STFT patch: auto (on for sm_12x or a failing self-test), on, off",
    )
    p.add_argument(
        "--fast",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fast path: static KV cache, CUDA-graph T3 decoding, graph-stepped S3Gen (default off)",
    )
    p.add_argument("--fast-dtype", choices=["fp32", "bf16"], default="fp32", help="fast path T3 dtype")
    p.add_argument("--install-label", default="pip --no-deps", help="engine.install label in results")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import platform

    from ttsbench.errors import UserError

    try:
        import torch

        from ttsbench.chatterbox.runner import DEFAULT_CHECKPOINT, RunnerConfig, run
    except ImportError as exc:
        raise UserError(
            f"bench-chatterbox needs torch and chatterbox-tts ({exc}); run it inside the chatterbox venv"
        ) from exc
    from rich.console import Console

    if args.warmup < 0 or args.runs < 1:
        raise UserError("--warmup must be ≥ 0 and --runs ≥ 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be ≥ 1")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = RunnerConfig(
        weights=args.weights,
        device=device,
        out=args.out,
        host_name=args.host_name or platform.node(),
        reference=args.reference,
        utterances=args.utterances,
        only=[s.strip() for s in args.only.split(",") if s.strip()] if args.only else None,
        warmup=args.warmup,
        runs=args.runs,
        max_new_tokens=args.max_new_tokens,
        cfg_weight=args.cfg_weight,
        exaggeration=args.exaggeration,
        temperature=args.temperature,
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir or DEFAULT_CHECKPOINT,
        stft_patch=args.stft_patch,
        install_label=args.install_label,
        fast=args.fast,
        fast_dtype=args.fast_dtype,
    )
    console = Console(stderr=True)
    with console.status("chatterbox: loading") as status:
        run_dir = run(cfg, progress=lambda utt, rep: status.update(f"chatterbox: {utt} (pass {rep + 1})"))
    console.print(f"bench-chatterbox: wrote {run_dir / 'results.json'}")
    return 0
