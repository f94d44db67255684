"""One vocoder thread for concurrent streams: due chunks of several requests vocoded in one batched S3Gen call.

Under concurrent streams every request thread used to take the one vocoder in turn
(:class:`~ttsbench.chatterbox.fast.VocoderLock`), so four streams' chunks were vocoded one after another
while T3 had long finished: the vocoder was the bottleneck (docs/benchmarks/chatterbox-fast-path.json,
``http.notes``). :class:`VocodeBatcher` owns S3Gen on one thread instead. Request threads submit a chunk's
speech tokens and wait for its audio; the thread takes the most urgent waiting job (a request's first chunk
before later chunks, then the oldest) and every other waiting job with the same number of tokens (the
streaming chunks have fixed shapes: first chunk, then context + chunk), up to ``max_batch``, and vocodes them
in one ``S3Token2Wav.inference`` call of batch ``B`` (upstream's flow and HiFT take a batch; the voice's
prompt is repeated per row). The CFM step and flow-encoder graphs are keyed by shape, so each (B, tokens) is
captured once in :meth:`warmup` and replayed.

Numbers: a batch of one is exactly :meth:`FastChatterbox.vocode` (one stream decodes bit-equal to before). In
a batch, each row's arithmetic is the same as alone up to the rounding of a different GEMM shape; the CFM's
starting noise and HiFT's random phase are drawn for the whole batch, so a row gets different draws than it
would alone — as it already did when streams interleaved (the generators are shared by all requests).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(eq=False)  # identity: jobs hold tensors
class _Job:
    tokens: torch.Tensor  # 1-D valid speech tokens on the device
    urgent: bool  # a request's first chunk
    seq: int
    post: Callable[[Any], Any] | None = None  # the caller's finishing step (seam, watermark), run here
    done: threading.Event = field(default_factory=threading.Event)
    wav: Any = None  # float32 numpy (samples,)
    error: BaseException | None = None


class VocodeBatcher:
    """The vocoder thread of one :class:`~ttsbench.chatterbox.fast.FastChatterbox`."""

    def __init__(self, fast: Any, max_batch: int = 4) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.fast = fast
        self.max_batch = max_batch
        self._cv = threading.Condition()
        self._jobs: list[_Job] = []
        self._seq = 0
        self._stop = False
        self.batches: dict[int, int] = {}  # batch size -> calls
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="s3-vocoder", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread after the batch in hand; jobs still waiting fail (their callers never hang)."""
        with self._cv:
            self._stop = True
            left, self._jobs = self._jobs, []
            self._cv.notify_all()
        for j in left:
            j.error = RuntimeError("the vocoder thread was closed")
            j.done.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def vocode(self, tokens: torch.Tensor, urgent: bool = False, post: Callable[[Any], Any] | None = None) -> Any:
        """Float32 numpy waveform (samples,) of 1-D valid speech tokens, vocoded with whatever else is due;
        ``post(wav)``'s result instead where given. ``post`` runs on the vocoder thread in the same turn (on its
        high-priority stream, T3 held for a first chunk): GPU work there is not starved by T3 steps."""
        with self._cv:
            if self._stop:
                raise RuntimeError("the vocoder thread was closed")
            job = _Job(tokens, urgent, self._seq, post)
            self._seq += 1
            self._jobs.append(job)
            self._cv.notify_all()
        job.done.wait()
        if job.error is not None:
            raise RuntimeError(f"vocoding failed: {job.error}") from job.error
        return job.wav

    def _take(self) -> list[_Job]:
        """The most urgent job and the waiting jobs of its shape (urgent first, then oldest), up to max_batch."""
        head = min(self._jobs, key=lambda j: (not j.urgent, j.seq))
        n = len(head.tokens)
        same = sorted((j for j in self._jobs if len(j.tokens) == n), key=lambda j: (not j.urgent, j.seq))
        group = same[: self.max_batch]
        for j in group:
            self._jobs.remove(j)
        return group

    def _loop(self) -> None:
        try:
            self._serve()
        finally:  # whatever ended the thread, no caller waits forever
            with self._cv:
                self._stop = True
            self.close()

    def _serve(self) -> None:
        f = self.fast
        ctx = torch.cuda.stream(f.s3_stream) if f.s3_stream is not None else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            while True:
                with self._cv:
                    while not self._stop and not self._jobs:
                        self._cv.wait()
                    if self._stop:
                        return
                    group = self._take()
                t0 = time.perf_counter()
                try:
                    urgent = any(j.urgent for j in group)
                    # s3_lock: a whole-utterance synthesize() on another thread uses the same S3Gen graphs
                    with f.s3_lock.urgent() if urgent else f.s3_lock, self._hold(urgent):
                        wavs = self.run(torch.stack([j.tokens for j in group]))
                        for j, w in zip(group, wavs, strict=True):
                            j.wav = j.post(w) if j.post is not None else w
                except BaseException as exc:  # every waiting caller hears of it; the thread keeps serving
                    for j in group:
                        j.error = exc
                finally:
                    self.busy_s += time.perf_counter() - t0
                    self.batches[len(group)] = self.batches.get(len(group), 0) + 1
                    for j in group:
                        j.done.set()

    def _hold(self, urgent: bool) -> contextlib.AbstractContextManager:
        f = self.fast
        if urgent and f.scheduler is not None and f.pause_t3_first_chunk:
            return f.scheduler.paused()
        return contextlib.nullcontext()

    def run(self, tokens: torch.Tensor) -> list[Any]:
        """Vocode a (B, n) batch of speech tokens → B float32 numpy waveforms (on the calling thread)."""
        wav = self.fast.vocode(tokens)  # (B, samples)
        host = wav.float().cpu().numpy()
        return [host[i] for i in range(host.shape[0])]

    def warmup(self, lengths: tuple[int, ...]) -> dict[str, Any]:
        """Capture the graphs of every batch size for each chunk length (call before graphs are frozen)."""
        t0 = time.perf_counter()
        shapes = 0
        with torch.inference_mode():
            for n in lengths:
                for b in range(2, self.max_batch + 1):
                    toks = torch.zeros(b, n, dtype=torch.long, device=self.fast.device)
                    for _ in range(2):  # encoder graphs: first sight warms up, second captures
                        self.run(toks)
                    shapes += 1
        return {"batch_shapes": shapes, "s": time.perf_counter() - t0}

    def state(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "batches": dict(sorted(self.batches.items())),
            "busy_s": round(self.busy_s, 3),
        }
