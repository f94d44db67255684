"""In-process Chatterbox benchmark (``ttsbench bench-chatterbox``); runs inside the chatterbox venv.

Loads ChatterboxTTS once (hub, a local dir, or a random-init checkpoint), applies the STFT patch decision,
does warm-up runs, then times ``generate`` per utterance and writes a run folder (docs/run-folder.md)::

    <out>/results.json                     kind chatterbox-inprocess, one system chatterbox@<host>
    <out>/wavs/chatterbox/<host>/<utt>.wav 24 kHz, 16-bit PCM
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsbench.atomic import write_atomic
from ttsbench.errors import UserError
from ttsbench.metrics import summarize
from ttsbench.results import new_document, new_run_id, utc_now

SAMPLE_RATE = 24000
MIN_REFERENCE_S = 1.0
DEFAULT_RANDOM_INIT_MAX_TOKENS = 50
DEFAULT_CHECKPOINT = Path.home() / ".cache" / "ttsbench" / "chatterbox-random-init"


@dataclass
class RunnerConfig:
    weights: str = "random-init"  # hub | random-init | <dir>
    device: str = "cpu"
    out: Path | None = None
    host_name: str = field(default_factory=platform.node)
    reference: Path | None = None
    utterances: Path | None = None
    only: list[str] | None = None
    warmup: int = 1
    runs: int = 1
    max_new_tokens: int | None = None
    cfg_weight: float = 0.3
    exaggeration: float = 0.3
    temperature: float = 0.6
    seed: int = 0
    checkpoint_dir: Path = DEFAULT_CHECKPOINT
    stft_patch: str = "auto"
    install_label: str = "pip --no-deps"
    fast: bool = False  # fast path (ttsbench.chatterbox.fast): static-cache, graph-captured T3 decoding
    fast_dtype: str = "fp32"  # fp32 | bf16 (T3 backbone and KV cache of the fast path)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Utt:
    utt_id: str
    text: str


def load_utterances(path: Path | None, only: list[str] | None) -> list[Utt]:
    """Utterances from ``files/utterances.yaml`` (or ``path``), optionally only some ids."""
    from ttsbench.utterances import load_utterances as strict_load

    items = [Utt(u.utt_id, u.text) for u in strict_load(path)]
    if only:
        known = {u.utt_id for u in items}
        unknown = [i for i in only if i not in known]
        if unknown:
            raise UserError(f"--only: unknown utterance id(s) {', '.join(unknown)}")
        items = [u for u in items if u.utt_id in only]
    return items


def prepare_reference(path: Path, workdir: Path) -> Path:
    """Check the reference WAV (exists, WAV, ≥ 1 s) and return a mono 24 kHz WAV path for chatterbox."""
    import numpy as np
    import soundfile as sf

    if not path.is_file():
        raise UserError(f"{path}: reference WAV not found")
    try:
        info = sf.info(str(path))
    except RuntimeError as exc:
        raise UserError(f"{path}: reference is not a readable audio file ({exc})") from exc
    if info.format != "WAV":
        raise UserError(f"{path}: reference must be a WAV file, this is {info.format}")
    if info.frames / max(info.samplerate, 1) < MIN_REFERENCE_S:
        raise UserError(
            f"{path}: reference is {info.frames / info.samplerate:.2f} s long; "
            f"need at least {MIN_REFERENCE_S:.0f} s of speech"
        )
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if sr != SAMPLE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=sr, target_sr=SAMPLE_RATE)
    if not np.isfinite(mono).all() or float(np.abs(mono).max(initial=0.0)) == 0.0:
        raise UserError(f"{path}: reference is silent or holds non-finite samples")
    out = workdir / "reference-24k.wav"
    sf.write(str(out), mono, SAMPLE_RATE, subtype="FLOAT")
    return out


# ---------------------------------------------------------------- model


def load_model(cfg: RunnerConfig) -> tuple[Any, str]:
    """(ChatterboxTTS, weights label)."""
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.checkpoint import make_random_checkpoint, require_complete
    from ttsbench.chatterbox.loading import load_model as load

    if cfg.weights == "hub":
        return load(lambda: ChatterboxTTS.from_pretrained(cfg.device)), "hub"
    if cfg.weights == "random-init":
        ckpt, _ = make_random_checkpoint(cfg.checkpoint_dir, seed=cfg.seed)
        return load(lambda: ChatterboxTTS.from_local(ckpt, cfg.device)), "random-init"
    ckpt = require_complete(Path(cfg.weights))
    from ttsbench.chatterbox.checkpoint import read_marker

    marker = read_marker(ckpt) or {}
    label = "random-init" if marker.get("weights") == "random-init" else "local"
    return load(lambda: ChatterboxTTS.from_local(ckpt, cfg.device)), label


def cap_tokens(model: Any, max_new_tokens: int) -> None:
    """ChatterboxTTS.generate hard-codes max_new_tokens=1000; cap T3's inference on this instance."""
    original = model.t3.inference

    def capped(*args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("max_new_tokens") or max_new_tokens
        kwargs["max_new_tokens"] = min(int(given), max_new_tokens)
        return original(*args, **kwargs)

    model.t3.inference = capped


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_fast(model: Any, cfg: RunnerConfig) -> Any:
    """The fast path over a loaded model (``--fast``)."""
    import torch

    from ttsbench.chatterbox.fast import FastChatterbox

    if cfg.fast_dtype not in ("fp32", "bf16"):
        raise UserError(f"--fast-dtype {cfg.fast_dtype!r}: use fp32 or bf16")
    return FastChatterbox(model, dtype=torch.bfloat16 if cfg.fast_dtype == "bf16" else None)


def synthesize(model: Any, text: str, cfg: RunnerConfig, reference: Path | None, fast: Any = None) -> Any:
    """One generate call (upstream, or ``fast`` when given); returns a 1-D float32 numpy array at 24 kHz."""
    import torch

    torch.manual_seed(cfg.seed)
    if fast is not None:
        from ttsbench.chatterbox.fast_t3 import SamplingParams

        if reference is not None:
            model.prepare_conditionals(str(reference), exaggeration=cfg.exaggeration)
        params = SamplingParams(temperature=cfg.temperature, cfg_weight=cfg.cfg_weight)
        return fast.synthesize(text, params, max_new_tokens=cfg.max_new_tokens or 1000, exaggeration=cfg.exaggeration)
    wav = model.generate(
        text,
        audio_prompt_path=str(reference) if reference else None,
        exaggeration=cfg.exaggeration,
        cfg_weight=cfg.cfg_weight,
        temperature=cfg.temperature,
    )
    return wav.squeeze(0).detach().cpu().float().numpy()


# ---------------------------------------------------------------- output


def write_wav_atomic(path: Path, audio: Any, sr: int = SAMPLE_RATE) -> None:
    import numpy as np
    import soundfile as sf

    write_atomic(path, lambda tmp: sf.write(tmp, np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16", format="WAV"))


def write_results(run_dir: Path, doc: dict[str, Any]) -> None:
    """Validate against the results schema and write atomically (the project's one writer)."""
    from ttsbench.results import write_results as project_write

    project_write(run_dir, doc)


# ---------------------------------------------------------------- run


def check_out(out: Path | None) -> None:
    """``--out`` must be a new or empty-of-results folder: the run document is written whole at the end."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out exists and is not a folder")
    if (out / "results.json").exists():
        raise UserError(
            f"{out}: already holds a results.json; bench-chatterbox writes a whole run document — give a new "
            "or empty --out (nothing was changed)"
        )
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{out}: cannot create or write the --out folder ({base} is not a writable folder)")


def run(cfg: RunnerConfig, progress: Any = None) -> Path:
    """Measure and write the run folder; returns its path. Ctrl-C keeps what was measured."""
    check_out(cfg.out)  # before torch, weights and any timed synthesis: nothing measured is thrown away
    import numpy as np
    import torch

    from ttsbench.chatterbox import stft_patch
    from ttsbench.chatterbox.hostfacts import host_facts, process_memory_mb

    utts = load_utterances(cfg.utterances, cfg.only)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device}: torch {torch.__version__} sees no CUDA GPU")
    if cfg.weights not in ("hub", "random-init") and not Path(cfg.weights).exists():
        raise UserError(f"{cfg.weights}: weights directory not found (use hub, random-init or a directory)")
    started = utc_now()
    run_id = new_run_id("chatterbox-inprocess")
    run_dir = cfg.out or Path("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    host = "".join(c if (c.isalnum() or c in "._-") else "-" for c in cfg.host_name) or "host"
    system_id = f"chatterbox@{host}"

    with tempfile.TemporaryDirectory(prefix="ttsbench-ref-") as tmpd:
        reference = prepare_reference(cfg.reference, Path(tmpd)) if cfg.reference else None
        model, weights_label = load_model(cfg)
        max_tokens = cfg.max_new_tokens
        if max_tokens is None and weights_label == "random-init":
            max_tokens = DEFAULT_RANDOM_INIT_MAX_TOKENS  # random weights never emit the stop token
        if max_tokens is not None:
            cap_tokens(model, max_tokens)
            cfg.max_new_tokens = max_tokens
        fast = make_fast(model, cfg) if cfg.fast else None
        if reference is None and model.conds is None:
            raise UserError("these weights have no built-in voice (conds.pt); give --reference WAV")
        patch = stft_patch.apply(cfg.stft_patch, cfg.device)
        import chatterbox

        config: dict[str, Any] = {
            "device": cfg.device,
            "cfg_weight": cfg.cfg_weight,
            "exaggeration": cfg.exaggeration,
            "temperature": cfg.temperature,
            "max_new_tokens": max_tokens,
            "seed": cfg.seed,
            "warmup": cfg.warmup,
            "runs": cfg.runs,
            "voice": str(cfg.reference) if cfg.reference else "builtin",
            "stft_patch": patch.as_dict(),
            "stream": False,
            "concurrency": 1,
            "ttfa_definition": "in-process, non-streaming: time until the whole waveform is returned",
            "weights_source": cfg.weights,
            "fast": {"enabled": bool(cfg.fast), "dtype": cfg.fast_dtype if cfg.fast else None},
        }
        doc: dict[str, Any] = new_document(run_id, "chatterbox-inprocess")
        doc["started_at"] = started
        rows: list[dict[str, Any]] = []
        peak_proc: float | None = None
        mem_source = "vmhwm"
        interrupted = False
        try:
            if cfg.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            for _ in range(cfg.warmup):
                synthesize(model, utts[0].text, cfg, reference, fast)
            _sync(cfg.device)
            for rep in range(cfg.runs):
                for utt in utts:
                    if progress is not None:
                        progress(utt.utt_id, rep)
                    wav_rel = f"wavs/chatterbox/{host}/{utt.utt_id}.wav"
                    row: dict[str, Any] = {
                        "utt_id": utt.utt_id,
                        "text": utt.text,
                        "wav": None,
                        "ok": False,
                        "error": None,
                        "http_status": None,
                        "ttfa_ms": None,
                        "t_first_nonsilent_ms": None,
                        "total_ms": None,
                        "audio_s": None,
                        "rtf": None,
                        "sample_rate": SAMPLE_RATE,
                        "concurrency": 1,
                        "request_index": rep,
                    }
                    try:
                        _sync(cfg.device)
                        t0 = time.perf_counter()
                        audio = synthesize(model, utt.text, cfg, reference, fast)
                        _sync(cfg.device)
                        elapsed = time.perf_counter() - t0
                        audio_s = audio.shape[-1] / SAMPLE_RATE
                        if audio.size == 0:
                            raise RuntimeError("zero-length audio")
                        if not np.isfinite(audio).all():
                            raise RuntimeError("non-finite samples in the waveform")
                        if rep == cfg.runs - 1:
                            write_wav_atomic(run_dir / wav_rel, audio)
                            row["wav"] = wav_rel
                        row.update(
                            ok=True,
                            ttfa_ms=elapsed * 1000.0,
                            total_ms=elapsed * 1000.0,
                            audio_s=audio_s,
                            rtf=elapsed / audio_s,
                        )
                    except (RuntimeError, ValueError, AssertionError) as exc:
                        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:500] or "error"
                    rows.append(row)
                    mb, mem_source = process_memory_mb()
                    if mb is not None:
                        peak_proc = max(peak_proc or 0.0, mb)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            patch.restore()
        if fast is not None:
            config["fast"]["cuda_graph"] = fast.t3.cuda_graph
            config["fast"]["graph_error"] = fast.graph_error
        peak_gpu = (torch.cuda.max_memory_allocated() / 2**20) if cfg.device.startswith("cuda") else None
        config["peak_proc_mem_source"] = mem_source
        system = {
            "system_id": system_id,
            "engine": {
                "name": "chatterbox",
                "version": chatterbox.__version__,
                "install": cfg.install_label,
                "standin": False,
                "weights": weights_label,
            },
            "host": host_facts(host, cfg.device),
            "config": config,
            "utterances": rows,
            "summary": summarize(rows, peak_gpu, peak_proc),
        }
        doc["systems"] = [system]
        doc["finished_at"] = utc_now()
        doc["complete"] = not interrupted and len(rows) == len(utts) * cfg.runs
        write_results(run_dir, doc)
    if interrupted:
        raise KeyboardInterrupt
    return run_dir
