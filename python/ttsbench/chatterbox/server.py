"""``ttsbench serve-chatterbox``: Chatterbox behind the OpenAI-style speech API the ttsbench client speaks.

Runs inside the chatterbox venv on a host (stdlib HTTP server: no web framework to install there).

* ``POST /v1/audio/speech`` JSON ``{input, model, voice, response_format: wav|pcm, stream, stream_format}``

  - ``stream: true`` (or ``stream_format: "audio"``) → chunked body: WAV = 44-byte header with 0xFFFFFFFF
    sizes, then 16-bit PCM, one chunk per sentence as soon as it is synthesized (with the fast path,
    ``--fast auto|on|off``, default on where CUDA is present: one chunk per vocoded group of speech tokens, the
    first after ``--first-chunk-tokens``); ``pcm`` = raw 16-bit
    little-endian mono, declared by the headers ``X-Sample-Rate``, ``X-Sample-Format: s16le``, ``X-Channels: 1``.
  - ``stream_format: "sse"`` → ``speech.audio.delta`` events with base64 audio, then ``speech.audio.done``
    (vllm-omni's SSE shape).
  - otherwise one complete body (WAV with true sizes, or raw PCM).

* ``GET /health`` → ``{status, model_loaded, device, stft_patch, fast, weights, voice, ...}``; ``GET /v1/models``.

One model load per process. With the fast path and ``--batch-slots N`` (default 4), up to N concurrent
requests are decoded together: one scheduler thread runs batched T3 steps (per-request sampling state and
stop, :mod:`ttsbench.chatterbox.fast_batch`) and one vocoder thread vocodes the chunks that are due, those of
one shape from several requests in one batched S3Gen call (:mod:`ttsbench.chatterbox.fast_vocoder`;
``--vocoder-batching off``: one chunk at a time, interleaved between requests). A fixed ``seed`` then still
seeds the global generators, but the draws of concurrent requests interleave, so only a request decoded alone is
reproducible. Otherwise synthesis is serialized by a lock (one request at a time). The voice is
the reference WAV given at start. Bad requests get a JSON 4xx and never stop the server.

A failed synthesis is logged with its traceback and answered 500. A CUDA error that leaves the process's GPU
context unusable (an illegal memory access, a device-side assert, a launch failure: every later CUDA call fails
too, :func:`fatal_gpu_error`) instead marks the server failed: ``/health`` answers 503 ``{"status": "failed"}``
at once, so a health-checking client fails over, later requests get 503, and the process exits with status 70
so that its supervisor restarts it (the role's systemd unit restarts on that status only:
``RestartForceExitStatus=70``). Measured need: on the H100 (2026-12-07) a server with ``--s3-compile on`` hit
an illegal memory access at concurrency 4 and then answered every request 500 while ``/health`` still said ok.
The sticky messages are torch's own (the test uses the one that server logged).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import itertools
import json
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError
from ttsbench.httpserve import JsonHandler, Server, wav_header

SAMPLE_RATE = 24000
MIN_REFERENCE_S = 1.0
MAX_BODY_BYTES = 1 << 20
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
# a period after these ends no sentence: titles, "St. James", initials ("J. R. Smith"), "e.g.", "etc."
_ABBREVIATION = re.compile(
    r"(?:^|[\s(\"'])(?:[A-Z]|Dr|Mr|Mrs|Ms|Mx|Prof|Sr|Jr|St|Mt|Ft|Ave|Blvd|Rd|Vol|Fig|Dept|Inc|Ltd|Co|Corp"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|approx|vs|etc|cf|al|e\.g|i\.e)\.$"
)
# ... nor one followed by a lower-case word or a number ("5 p.m. in Tokyo", "No. 5", "fig. 3")
_CONTINUES = re.compile(r"^[\"'(]?[a-z0-9]")


@dataclass
class ServerConfig:
    weights: str = "hub"  # "hub" or a checkpoint directory
    weights_label: str = ""  # hub | local | random-init (what /health and results report)
    reference: str = ""
    voice: str = ""  # name the voice answers to (default: the reference file's stem)
    host: str = "127.0.0.1"
    port: int = 8772
    device: str = "auto"
    stft_patch: str = "auto"
    max_new_tokens: int | None = None
    cfg_weight: float = 0.3
    exaggeration: float = 0.3
    temperature: float = 0.6
    max_chars: int = 2000
    seed: int | None = None
    model_name: str = "chatterbox"
    # What OpenAI-style consumers send: lenient (default) takes any model name and any voice name and speaks
    # with the reference voice; strict answers 400 to a model not in {model_name} + accept_models and to a
    # voice not in {voice, "default"} + voice_aliases (all aliases map to the one reference voice).
    strict: bool = False
    accept_models: tuple[str, ...] = ()
    voice_aliases: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    verbose: bool = False
    failed_exit_delay_s: float = 3.0  # after a sticky CUDA error: how long /health answers 503 before the exit
    fast: str = "auto"  # auto (on where CUDA is present) | on | off
    fast_dtype: str = "fp32"  # fp32 | bf16
    t3_attn: str = "fused"  # fast path: fused (one Triton kernel per layer, checked at start-up) | eager
    t3_prefill_graphs: bool = False  # fast path, batch_slots > 0: prefill from CUDA graphs (opt-in, see docs)
    first_chunk_tokens: int = 12  # streaming: vocode and send after this many valid speech tokens
    chunk_tokens: int = 50  # streaming: valid speech tokens per later chunk (each re-runs the flow over the prompt)
    batch_slots: int = 4  # fast path: concurrent requests decoded together (0: one request at a time)
    hift: str = "graph"  # fast path on CUDA: upstream | sync-free | graph (fast_hift.py)
    batch_vocoder: bool = True  # fast path, batch_slots > 1: due chunks of concurrent streams vocoded together
    # batched vocoding, measured together (docs/benchmarks/README.md, run7): c=4 first audio ~415 -> ~300 ms (H100)
    vocoder_preempt: bool = True  # first chunks vocoded between the CFM steps of a batch of later chunks
    vocoder_yield: bool = True  # batches of later chunks wait while a request decodes its first tokens
    vocoder_catch_up: bool = True  # a stream that fell behind sends its due chunks to the vocoder at once
    vocoder_deadlines: bool = False  # later chunks by playback deadline; yields only where no stream runs out
    s3_compile: bool = False  # fast path on CUDA: CFM estimator through torch.compile (not bit-equal; checked)
    pause_t3_first_chunk: bool = True  # fast path, batch_slots > 0: no T3 steps while a first chunk is vocoded
    fast_max_len: int = 2048  # fast path: KV cache positions per request
    tokens_per_char: float | None = None  # cap per sentence = max(25, round(this * chars)) (random-init weights)


# ---------------------------------------------------------------------------------------------- checks
def check_weights_dir(path: str | Path) -> Path:
    """A local checkpoint directory with every file Chatterbox loads, or a UserError naming what is missing."""
    from ttsbench.chatterbox.checkpoint import require_complete

    return require_complete(path)


def check_reference(path: str | Path) -> float:
    """Duration (s) of a usable reference WAV, or a UserError saying what is wrong with it."""
    import soundfile as sf

    p = Path(path)
    if not str(path):
        raise UserError("no reference voice: pass --reference WAV (at least 1 s of clean speech)")
    if not p.is_file():
        raise UserError(f"reference voice {p} does not exist")
    try:
        info = sf.info(str(p))
        data, _sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise UserError(f"reference voice {p} is not a readable audio file ({exc})") from exc
    if info.samplerate <= 0 or data.shape[0] == 0:
        raise UserError(f"reference voice {p} holds no audio")
    dur = data.shape[0] / float(info.samplerate)
    if dur < MIN_REFERENCE_S:
        raise UserError(f"reference voice {p} is {dur:.2f} s long; it must be at least {MIN_REFERENCE_S:.0f} s")
    import numpy as np

    if not np.isfinite(data).all() or float(np.abs(data).max()) == 0.0:
        raise UserError(f"reference voice {p} is silent or not finite")
    return dur


def split_sentences(text: str) -> list[str]:
    """The sentences synthesized one after another: split after . ! ? ; : and white space, except after a
    title, a common abbreviation or an initial ("Dr. Siobhan O'Connor and Mr. Nguyen" stays one sentence) and
    before a lower-case word or a number."""
    out: list[str] = []
    for part in (s.strip() for s in _SENTENCE_END.split(text.strip())):
        if not part:
            continue
        if out and (_ABBREVIATION.search(out[-1]) or _CONTINUES.match(part)):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return out


# ---------------------------------------------------------------------------------------------- engine
class Engine:
    """One loaded Chatterbox model, its voice conditionals, and the lock that serializes synthesis."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.model: Any = None
        self.device = "cpu"
        self.stft_state: dict[str, Any] = {}
        self.versions: dict[str, Any] = {}
        self.reference_s = 0.0
        self.load_s = 0.0
        self.fast: Any = None
        self.fast_warmup: dict[str, Any] | None = None
        self.fast_batching: dict[str, Any] | None = None
        self.failed: str | None = None  # a sticky CUDA error: /health fails, the process exits (fatal_gpu_error)
        self.on_failed: Any = None  # called once when failed is set (serve: shut the server down)
        self._fail_lock = threading.Lock()  # not self.lock: a synthesis may hold that one

    def fail(self, reason: str) -> None:
        """Mark the engine unusable (the first reason is kept) and tell the server, once."""
        with self._fail_lock:
            first = self.failed is None
            if first:
                self.failed = reason
        if first:
            print(json.dumps({"event": "gpu_failed", "error": reason}), file=sys.stderr, flush=True)
            if self.on_failed is not None:
                self.on_failed()

    def load(self) -> None:
        cfg = self.cfg
        self.reference_s = check_reference(cfg.reference) if cfg.reference else 0.0
        weights_dir = None if cfg.weights == "hub" else check_weights_dir(cfg.weights)
        try:
            import torch
            from chatterbox.tts import ChatterboxTTS
        except ImportError as exc:
            raise UserError(
                f"serve-chatterbox needs torch and chatterbox-tts ({exc}): run it from the chatterbox "
                "venv that roles/chatterbox makes"
            ) from exc
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device")
        self.device = device
        t0 = time.perf_counter()
        self.stft_state = apply_stft_patch(cfg.stft_patch, device)
        from ttsbench.chatterbox.loading import load_model

        if weights_dir is None:
            model = load_model(lambda: ChatterboxTTS.from_pretrained(device))
        else:
            model = load_model(lambda: ChatterboxTTS.from_local(weights_dir, device))
        if cfg.max_new_tokens or cfg.tokens_per_char:
            self._install_cap(model)
        if cfg.reference:
            model.prepare_conditionals(cfg.reference, exaggeration=cfg.exaggeration)
        elif model.conds is None:
            raise UserError(f"weights {cfg.weights} have no built-in voice (conds.pt): pass a reference WAV")
        if cfg.fast not in ("auto", "on", "off"):
            raise UserError(f"--fast {cfg.fast!r}: use auto, on or off")
        if cfg.fast == "on" or (cfg.fast == "auto" and device.startswith("cuda")):
            from ttsbench.chatterbox.fast import FastChatterbox

            if cfg.fast_dtype not in ("fp32", "bf16"):
                raise UserError(f"--fast-dtype {cfg.fast_dtype!r}: use fp32 or bf16")
            if cfg.t3_attn not in ("fused", "eager"):
                raise UserError(f"--t3-attn {cfg.t3_attn!r}: use fused or eager")
            from ttsbench.chatterbox.fast_hift import MODES as HIFT_MODES

            if cfg.hift not in HIFT_MODES:
                raise UserError(f"--hift {cfg.hift!r}: use one of {', '.join(HIFT_MODES)}")
            self.fast = FastChatterbox(
                model,
                dtype=torch.bfloat16 if cfg.fast_dtype == "bf16" else None,
                max_len=cfg.fast_max_len,
                hift=cfg.hift,
                s3_compile=cfg.s3_compile,
                t3_attn=None if cfg.t3_attn == "fused" else False,
            )
            self.fast.pause_t3_first_chunk = cfg.pause_t3_first_chunk
        self.model = model
        if self.fast is not None and self.fast.t3.cuda_graph:  # capture graphs now, not in the first request
            self.fast_warmup = self.fast.warmup(
                self._params(),
                exaggeration=cfg.exaggeration,
                first_chunk_tokens=cfg.first_chunk_tokens,
                chunk_tokens=cfg.chunk_tokens,
            )
        if self.fast is not None and cfg.batch_slots > 0:
            self.fast_batching = self.fast.enable_batching(
                cfg.batch_slots,
                batch_vocoder=cfg.batch_vocoder,
                vocoder_preempt=cfg.vocoder_preempt,
                vocoder_yield=cfg.vocoder_yield,
                vocoder_catch_up=cfg.vocoder_catch_up,
                vocoder_deadlines=cfg.vocoder_deadlines,
                first_chunk_tokens=cfg.first_chunk_tokens,
                chunk_tokens=cfg.chunk_tokens,
                prefill_graphs=cfg.t3_prefill_graphs,
            )
        if self.fast is not None and self.fast.scheduler is not None and self.fast.t3.cuda_graph:
            # no S3Gen graph captures from here on (a capture while the scheduler thread launches work is not
            # safe); then warm the batched path end to end before the first request
            self.fast.freeze_graphs()
            for _ in self.fast.stream(
                "Warm up.",
                self._params(),
                max_new_tokens=cfg.first_chunk_tokens + 4,
                exaggeration=cfg.exaggeration,
                first_chunk_tokens=cfg.first_chunk_tokens,
                chunk_tokens=cfg.chunk_tokens,
                tokens=self.fast.scheduler.tokens,
            ):
                pass
            sys.setswitchinterval(0.0005)  # the scheduler thread gets the GIL back between vocoder launches
        self.load_s = time.perf_counter() - t0
        self.versions = runtime_versions()

    def token_cap(self, sentence: str) -> int:
        """Speech-token cap of one sentence: ``--max-new-tokens`` (default 1000), lowered to
        ``max(25, round(tokens_per_char * chars))`` with ``--tokens-per-char`` (random-init weights never stop)."""
        cap = self.cfg.max_new_tokens or 1000
        if self.cfg.tokens_per_char:
            cap = min(cap, max(25, round(self.cfg.tokens_per_char * len(sentence))))
        return cap

    def _install_cap(self, model: Any) -> None:
        """ChatterboxTTS.generate hard-codes max_new_tokens=1000: cap T3's inference on this instance at the
        cap of the sentence being synthesized (upstream synthesis is serialized, so one value at a time)."""
        original = model.t3.inference
        engine = self

        def capped(*args: Any, **kwargs: Any) -> Any:
            given = kwargs.get("max_new_tokens") or 1000
            kwargs["max_new_tokens"] = min(int(given), engine._cap_now)
            return original(*args, **kwargs)

        model.t3.inference = capped

    _cap_now = 1000

    def synthesize(self, text: str, seed: int | None = None) -> Any:
        """Float32 mono samples at 24 kHz for one piece of text (serialized)."""
        import numpy as np
        import torch

        with self.lock:
            if seed is not None:
                torch.manual_seed(seed)
            self._cap_now = self.token_cap(text)
            if self.fast is not None:
                x = self.fast.synthesize(
                    text, self._params(), max_new_tokens=self._cap_now, exaggeration=self.cfg.exaggeration
                ).astype(np.float32)
                if not np.isfinite(x).all():
                    raise RuntimeError("synthesis produced non-finite samples")
                return x
            wav = self.model.generate(
                text,
                exaggeration=self.cfg.exaggeration,
                cfg_weight=self.cfg.cfg_weight,
                temperature=self.cfg.temperature,
            )
        x = wav.squeeze(0).detach().cpu().numpy().astype(np.float32)
        if not np.isfinite(x).all():
            raise RuntimeError("synthesis produced non-finite samples")
        return x

    def _params(self) -> Any:
        from ttsbench.chatterbox.fast_t3 import SamplingParams

        return SamplingParams(temperature=self.cfg.temperature, cfg_weight=self.cfg.cfg_weight)

    def stream(self, text: str, seed: int | None = None) -> Iterator[bytes]:
        """16-bit PCM: per sentence; with the fast path, per vocoded chunk of speech tokens. With batched
        decoding, each sentence's T3 is submitted to the scheduler, the next one as soon as the current
        sentence's last token is in, so that it decodes while the current one's last chunk is vocoded."""
        sentences = split_sentences(text)
        submitted: dict[int, Any] = {}  # sentence index -> its TokenStream, decoding
        batched = self.fast is not None and self.fast.scheduler is not None

        def submit(i: int) -> None:
            if batched and i < len(sentences) and i not in submitted:
                submitted[i] = self._submit(sentences[i])

        try:
            for i, sentence in enumerate(sentences):
                seed_i = None if seed is None else seed + i
                if self.fast is None:
                    yield to_pcm16(self.synthesize(sentence, seed_i))
                    continue
                submit(i)
                yield from self._fast_chunks(sentence, seed_i, submitted.get(i), lambda j=i + 1: submit(j))
        finally:
            for stream in submitted.values():  # a no-op for a sentence read to the end; else frees its slot
                stream.close()

    def _submit(self, sentence: str) -> Any:
        f = self.fast
        f._prepare(self.cfg.exaggeration)
        return f.scheduler.submit(f.model.conds.t3, f.text_tokens(sentence), self.token_cap(sentence), self._params())

    def _fast_chunks(
        self, sentence: str, seed: int | None, started: Any = None, on_tokens_done: Any = None
    ) -> Iterator[bytes]:
        """``started``: the sentence's TokenStream from the batched scheduler; None: this thread decodes it (one
        request at a time, under the engine's lock)."""
        import numpy as np
        import torch

        with self.lock if started is None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            for chunk in self.fast.stream(
                sentence,
                self._params(),
                max_new_tokens=self.token_cap(sentence),
                exaggeration=self.cfg.exaggeration,
                first_chunk_tokens=self.cfg.first_chunk_tokens,
                chunk_tokens=self.cfg.chunk_tokens,
                tokens=None if started is None else lambda *_: started,
                on_tokens_done=on_tokens_done,
            ):
                if not np.isfinite(chunk).all():
                    raise RuntimeError("synthesis produced non-finite samples")
                yield to_pcm16(chunk)

    def fast_state(self) -> dict[str, Any]:
        f = self.fast
        return {
            "mode": self.cfg.fast,
            "enabled": f is not None,
            "dtype": self.cfg.fast_dtype if f else None,
            "cuda_graph": bool(f and f.t3.cuda_graph),
            "graph_error": f and f.graph_error,
            "compiled_layers": bool(f and f.t3.compiled),
            "compile_error": f and f.t3.compile_error,
            "gemv": bool(f and f.t3.gemv),
            "gemv_error": f and f.t3.gemv_error,
            "fused_attn": bool(f and f.t3.fused_attn),
            "attn_error": f and f.t3.attn_error,
            "first_chunk_tokens": self.cfg.first_chunk_tokens if f else None,
            "chunk_tokens": self.cfg.chunk_tokens if f else None,
            "hift": f and f.hift_state(),
            "pause_t3_first_chunk": bool(f and f.pause_t3_first_chunk),
            "s3_compile": f and f.s3_compile and f.s3_compile.state(),
            "warmup": self.fast_warmup,
            "batching": self.fast_batching,
            "scheduler": None
            if not (f and f.scheduler)
            else {"steps": f.scheduler.steps, "width_steps": dict(f.scheduler.width_steps), "error": f.scheduler.error},
            "vocoder": f.vocoder.state() | {"catch_up": f.catch_up} if f and f.vocoder else None,
        }


def to_pcm16(x: Any) -> bytes:
    import numpy as np

    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def apply_stft_patch(mode: str, device: str) -> dict[str, Any]:
    if mode not in ("auto", "on", "off"):
        raise UserError(f"--stft-patch {mode!r}: use auto, on or off")
    from ttsbench.chatterbox import stft_patch

    return stft_patch.apply(mode, device).as_dict()


def runtime_versions() -> dict[str, Any]:
    import importlib.metadata as md
    import platform

    import torch

    def ver(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cuda_ok = torch.cuda.is_available()
    cc = torch.cuda.get_device_capability(0) if cuda_ok else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_file": str(Path(torch.__file__).parent),
        "torchaudio": ver("torchaudio"),
        "chatterbox": ver("chatterbox-tts"),
        "transformers": ver("transformers"),
        "cuda": torch.version.cuda,
        "cuda_available": cuda_ok,
        "gpu_name": torch.cuda.get_device_name(0) if cuda_ok else None,
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "arch": platform.machine(),
    }


# ---------------------------------------------------------------------------------------------- HTTP
class ChatterboxHTTPServer(Server):
    request_queue_size = 64


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# CUDA errors after which the process's context is unusable ("sticky": every later CUDA call fails too)
_STICKY_CUDA = re.compile(
    r"illegal memory access|misaligned address|unspecified launch failure|illegal instruction"
    r"|device-side assert|hardware stack error|cudaErrorLaunchFailure|cudaErrorIllegalAddress",
    re.IGNORECASE,
)
EXIT_GPU_FAILED = 70  # EX_SOFTWARE: the supervisor restarts the server


def fatal_gpu_error(exc: BaseException) -> str | None:
    """The first line of a sticky CUDA error anywhere in ``exc``'s chain (cause, context), else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _STICKY_CUDA.search(str(e)):
            return f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
        e = e.__cause__ or e.__context__
    return None


class Handler(JsonHandler):
    server_version = "ttsbench-chatterbox/1"
    engine: Engine
    cfg: ServerConfig

    def verbose(self) -> bool:
        return self.cfg.verbose

    def _error(self, status: int, message: str) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        self.send_error_json(status, message, extra_headers=headers)

    def _authorized(self) -> bool:
        token = self.cfg.token
        if not token:
            return True
        got = self.headers.get("Authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def _read_body(self) -> bytes:
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            self.close_connection = True
            raise BadRequest(400, "bad Content-Length") from exc
        if n > MAX_BODY_BYTES:
            self.close_connection = True
            raise BadRequest(413, f"request body of {n} bytes is over the {MAX_BODY_BYTES} byte limit")
        return self.rfile.read(n) if n else b""

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    # -- routes
    def do_GET(self) -> None:
        if not self._authorized():
            self._error(401, "missing or wrong bearer token")
            return
        e, c = self.engine, self.cfg
        if self.path == "/health" and e.failed:
            self.send_json(
                503, {"status": "failed", "model_loaded": False, "error": e.failed, "exit_code": EXIT_GPU_FAILED}
            )
        elif self.path == "/health":
            self.send_json(
                200,
                {
                    "status": "ok" if e.model is not None else "loading",
                    "model_loaded": e.model is not None,
                    "device": e.device,
                    "stft_patch": e.stft_state,
                    "fast": e.fast_state(),
                    "weights": c.weights_label,
                    "voice": c.voice,
                    "accepts": {
                        "strict": c.strict,
                        "models": [c.model_name, *c.accept_models],
                        "voice_aliases": list(c.voice_aliases),
                    },
                    "reference_s": round(e.reference_s, 3),
                    "sample_rate": SAMPLE_RATE,
                    "max_new_tokens": c.max_new_tokens,
                    "tuning": {
                        "cfg_weight": c.cfg_weight,
                        "exaggeration": c.exaggeration,
                        "temperature": c.temperature,
                    },
                    "versions": e.versions,
                    "load_s": round(e.load_s, 3),
                },
            )
        elif self.path == "/v1/models":
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "owned_by": "resemble-ai", "weights": c.weights_label}
                        for m in dict.fromkeys((c.model_name, *c.accept_models))
                    ],
                },
            )
        elif self.path == "/v1/audio/voices":
            self.send_json(
                200,
                {"voices": list(dict.fromkeys((c.voice, *c.voice_aliases))), "uploaded_voices": [], "strict": c.strict},
            )
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        try:
            body = self._read_body()
            if not self._authorized():
                self._error(401, "missing or wrong bearer token")
                return
            if self.path != "/v1/audio/speech":
                self._error(404, f"no route {self.path}")
                return
            text, fmt, mode, seed = self._parse(body)
        except BadRequest as exc:
            self._error(exc.status, str(exc))
            return
        if self.engine.failed:
            self._error(503, f"the server's GPU context failed ({self.engine.failed}); it is restarting")
            return
        try:
            self._speak(text, fmt, mode, seed)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a failed synthesis must not take the server down
            print(f"serve-chatterbox: synthesis failed: {exc!r}\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            self.close_connection = True
            fatal = fatal_gpu_error(exc)
            if fatal:  # the GPU context is gone: fail /health now, exit for the supervisor to restart us
                self.engine.fail(fatal)
            if not getattr(self, "_started", False):
                status = 503 if fatal else 500
                self._error(status, f"synthesis failed: {exc}" + ("; the server is restarting" if fatal else ""))

    def _parse(self, body: bytes) -> tuple[str, str, str, int | None]:
        c = self.cfg
        try:
            req = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise BadRequest(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(req, dict):
            raise BadRequest(400, "request body must be a JSON object")
        text = req.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(400, "'input' must be non-empty text")
        if len(text) > c.max_chars:
            raise BadRequest(413, f"'input' is {len(text)} characters; this server takes at most {c.max_chars}")
        fmt = req.get("response_format") or "wav"
        if fmt not in ("wav", "pcm"):
            raise BadRequest(400, f"unknown response_format {fmt!r}: this server speaks wav or pcm")
        voice = req.get("voice")
        if voice is not None and not isinstance(voice, str):
            raise BadRequest(400, "'voice' must be a string")
        model = req.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequest(400, "'model' must be a string")
        if c.strict:
            voices = (c.voice, "default", *c.voice_aliases)
            if voice not in (None, "", *voices):
                raise BadRequest(
                    400,
                    f"unknown voice {voice!r}: this server speaks one voice, known as "
                    f"{', '.join(repr(v) for v in voices)} (--voice-alias adds names)",
                )
            models = (c.model_name, *c.accept_models)
            if model not in (None, "", *models):
                raise BadRequest(
                    400,
                    f"unknown model {model!r}: this server accepts "
                    f"{', '.join(repr(m) for m in models)} (--accept-model adds names)",
                )
        sf = req.get("stream_format")
        if sf not in (None, "audio", "sse"):
            raise BadRequest(400, f"stream_format must be 'audio' or 'sse', not {sf!r}")
        stream = req.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest(400, "'stream' must be true or false")
        mode = sf if sf else ("audio" if stream else "none")
        seed = req.get("seed", c.seed)
        if seed is not None and not isinstance(seed, int):
            raise BadRequest(400, "'seed' must be an integer")
        if not split_sentences(text):
            raise BadRequest(400, "'input' holds nothing to say")
        return text, fmt, mode, seed

    def _speak(self, text: str, fmt: str, mode: str, seed: int | None) -> None:
        e = self.engine
        ctype = "audio/wav" if fmt == "wav" else "audio/pcm"
        pcm_headers = {"X-Sample-Rate": str(SAMPLE_RATE), "X-Sample-Format": "s16le", "X-Channels": "1"}
        if mode == "none":
            pcm = b"".join(e.stream(text, seed))
            body = (wav_header(SAMPLE_RATE, len(pcm)) if fmt == "wav" else b"") + pcm
            self._started = True
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in pcm_headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            return
        pieces = e.stream(text, seed)
        first = next(pieces)  # synthesize the first sentence before committing to 200
        self._started = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if mode == "sse" else ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        for k, v in pcm_headers.items():
            self.send_header(k, v)
        self.end_headers()
        head = wav_header(SAMPLE_RATE) if fmt == "wav" else b""
        for piece in itertools.chain([head + first], pieces):
            if mode == "sse":
                self._sse(piece, fmt)
            else:
                self._chunk(piece)
        if mode == "sse":
            done = {"type": "speech.audio.done", "usage": None}
            self._chunk(b"event: speech.audio.done\ndata: " + json.dumps(done).encode() + b"\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _sse(self, data: bytes, fmt: str) -> None:
        ev = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode(), "response_format": fmt}
        self._chunk(b"event: speech.audio.delta\ndata: " + json.dumps(ev).encode() + b"\n\n")


def make_server(cfg: ServerConfig, engine: Engine) -> ChatterboxHTTPServer:
    handler = type("BoundHandler", (Handler,), {"engine": engine, "cfg": cfg})
    try:
        return ChatterboxHTTPServer((cfg.host, cfg.port), handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from exc


def serve(cfg: ServerConfig) -> int:
    """Validate, load the model once, then serve until SIGTERM/SIGINT; SIGUSR1 prints every thread's stack."""
    import faulthandler
    import signal

    if not cfg.voice:
        cfg.voice = Path(cfg.reference).stem or "default"
    engine = Engine(cfg)
    t0 = time.perf_counter()
    engine.load()
    server = make_server(cfg, engine)
    info = {
        "event": "ready",
        "host": cfg.host,
        "port": server.server_address[1],
        "device": engine.device,
        "weights": cfg.weights_label,
        "voice": cfg.voice,
        "stft_patch": engine.stft_state,
        "load_s": round(time.perf_counter() - t0, 2),
        "versions": engine.versions,
        "config": {k: v for k, v in asdict(cfg).items() if k != "token"},
    }
    print(json.dumps(info), flush=True)

    def _stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    def _failed() -> None:  # a few seconds of 503s on /health first, so pollers see why before the port closes
        timer = threading.Timer(cfg.failed_exit_delay_s, server.shutdown)
        timer.daemon = True
        timer.start()

    engine.on_failed = _failed
    signal.signal(signal.SIGTERM, _stop)
    # `kill -USR1 <pid>`: every thread's Python stack to stderr (the journal), the server carries on: what a
    # stuck stream is waiting on, without ptrace rights (py-spy) on the host.
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    if engine.failed:
        print(json.dumps({"event": "stopped", "error": engine.failed, "exit_code": EXIT_GPU_FAILED}), flush=True)
        return EXIT_GPU_FAILED
    print(json.dumps({"event": "stopped"}), flush=True)
    return 0
