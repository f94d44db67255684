"""Random-init Chatterbox checkpoints: every file ``ChatterboxTTS.from_local`` reads, own classes.

Layout (chatterbox-tts 0.1.7 ``from_local``)::

    ve.safetensors       VoiceEncoder().state_dict()
    t3_cfg.safetensors   T3().state_dict()            (English config, Llama_520M)
    s3gen.safetensors    S3Gen().state_dict()         (loaded with strict=False upstream)
    tokenizer.json       a character-level tokenizers.Tokenizer that EnTokenizer accepts ([START]/[STOP])
    conds.pt             default Conditionals made by prepare_conditionals on a synthetic 3 s reference
    weights.json         {"weights": "random-init", "seed": S, "chatterbox": version}

The weights are meaningless (the model babbles and never emits its stop token), but every tensor has the
production shape, so timings and memory match the real model. Needs torch + chatterbox-tts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError

WEIGHT_FILES: tuple[str, ...] = (
    "ve.safetensors",
    "t3_cfg.safetensors",
    "s3gen.safetensors",
    "tokenizer.json",
)
OPTIONAL_FILES: tuple[str, ...] = ("conds.pt",)
MARKER = "weights.json"

# text token ids as chatterbox's T3Config.english_only() expects them
_START_ID, _STOP_ID, _TEXT_VOCAB = 255, 0, 704


def missing_files(ckpt_dir: str | os.PathLike) -> list[str]:
    """The files from_local needs that are absent from ``ckpt_dir``."""
    d = Path(ckpt_dir)
    return [name for name in WEIGHT_FILES if not (d / name).is_file()]


def require_complete(ckpt_dir: str | os.PathLike) -> Path:
    """Raise a UserError that names the first missing file; return the directory."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise UserError(f"{d}: weights directory not found")
    missing = missing_files(d)
    if missing:
        raise UserError(
            f"{d}: weights directory is missing {', '.join(missing)} (ChatterboxTTS.from_local needs "
            f"{', '.join(WEIGHT_FILES)})"
        )
    return d


def read_marker(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(ckpt_dir) / MARKER
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(ckpt_dir: str | os.PathLike, seed: int) -> bool:
    """True when every file is there and the marker says random-init with this seed."""
    marker = read_marker(ckpt_dir)
    return (
        not missing_files(ckpt_dir)
        and (Path(ckpt_dir) / "conds.pt").is_file()
        and marker is not None
        and marker.get("weights") == "random-init"
        and marker.get("seed") == seed
    )


def tokenizer_json() -> str:
    """A character-level tokenizer: [STOP]=0, [START]=255, [SPACE] as an added token, ids < 704."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"]
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    chars = [chr(c) for c in range(33, 127)] + list("àáâäçèéêëíîïñóôöúûüßÀÉÖÜ’“”—–…")
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for filler in range(len(vocab), _START_ID):  # no holes below [START]
        vocab[f"[unused{filler}]"] = filler
    vocab["[START]"] = _START_ID
    if max(vocab.values()) >= _TEXT_VOCAB or len(set(vocab.values())) != len(vocab):
        raise AssertionError("tokenizer ids collide or exceed the T3 text vocabulary")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.add_special_tokens(["[START]", "[STOP]", "[UNK]", "[SPACE]", "[PAD]", "[SEP]", "[CLS]", "[MASK]"])
    return tok.to_str()


def _save_state(module: Any, path: Path) -> None:
    from safetensors.torch import save_file

    # clone: safetensors refuses tensors that share storage (tied weights)
    state = {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def _reference_wav(seconds: float = 3.0, sr: int = 24000, seed: int = 0) -> Any:
    """A deterministic voiced-ish signal (harmonics + a little noise) to build default conds from."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140.0 + 20.0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2)
    wav = 0.3 * wav / np.max(np.abs(wav)) + 0.01 * rng.standard_normal(t.shape)
    return wav.astype(np.float32)


def make_random_checkpoint(ckpt_dir: str | os.PathLike, seed: int = 0, force: bool = False) -> tuple[Path, bool]:
    """Build the checkpoint in a temp folder beside ``ckpt_dir`` and rename it into place.

    Returns (dir, built). Skips (built=False) when the directory is already complete with the same seed.
    """
    import soundfile as sf
    import torch
    from chatterbox import __version__ as cb_version
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.loading import load_skipping_random_init

    dest = Path(ckpt_dir)
    if not force and is_complete(dest, seed):
        return dest, False
    if dest.exists() and any(dest.iterdir()) and read_marker(dest) is None:
        raise UserError(
            f"{dest}: exists and is not a random-init checkpoint (no {MARKER}); choose an empty or new directory"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    os.chmod(tmp, 0o755)
    try:
        torch.manual_seed(seed)
        _save_state(VoiceEncoder(), tmp / "ve.safetensors")
        _save_state(T3(), tmp / "t3_cfg.safetensors")
        _save_state(S3Gen(), tmp / "s3gen.safetensors")
        (tmp / "tokenizer.json").write_text(tokenizer_json(), encoding="utf-8")
        # default voice: run chatterbox's own prepare_conditionals on a synthetic reference
        model, missing = load_skipping_random_init(lambda: ChatterboxTTS.from_local(tmp, "cpu"))
        if missing:
            raise RuntimeError(f"the checkpoint just written lacks parameters: {missing[:5]}")
        ref = tmp / "reference.wav"
        sf.write(str(ref), _reference_wav(seed=seed), 24000, subtype="PCM_16")
        torch.manual_seed(seed)
        model.prepare_conditionals(str(ref), exaggeration=0.5)
        model.conds.save(tmp / "conds.pt")
        ref.unlink()
        marker = {
            "weights": "random-init",
            "seed": seed,
            "chatterbox": cb_version,
            "files": [*WEIGHT_FILES, "conds.pt"],
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest, True
