"""``ttsbench chatterbox ...``: helpers for the chatterbox venv (random-init checkpoints)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chatterbox", help="chatterbox helpers (run inside the chatterbox venv)")
    csub = p.add_subparsers(dest="chatterbox_command", metavar="ACTION", required=True)
    mk = csub.add_parser(
        "make-random-checkpoint",
        help="write every file ChatterboxTTS.from_local reads, with random-init weights (≈3 GB)",
    )
    mk.add_argument("dir", type=Path, help="checkpoint directory to create")
    mk.add_argument("--seed", type=int, default=0, help="torch seed for the initialisation (default 0)")
    mk.add_argument("--force", action="store_true", help="rebuild even when complete with the same seed")
    mk.set_defaults(func=_make)


def _make(args: argparse.Namespace) -> int:
    from ttsbench.errors import UserError

    try:
        from ttsbench.chatterbox.checkpoint import make_random_checkpoint
    except ImportError as exc:  # pragma: no cover - import of the module itself is stdlib-only
        raise UserError(f"needs torch and chatterbox-tts ({exc}); run inside the chatterbox venv") from exc
    try:
        path, built = make_random_checkpoint(args.dir, seed=args.seed, force=args.force)
    except ImportError as exc:
        raise UserError(f"needs torch and chatterbox-tts ({exc}); run inside the chatterbox venv") from exc
    print(f"{'built' if built else 'already complete (same seed), skipped'}: {path}")
    return 0
