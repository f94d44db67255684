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

Chunks of different lengths meet too: a job may carry the sentence's earlier tokens (``prefix``), and where
that is enough, the batcher prepends more of them so that its length matches the others' — a shape whose
batch graphs were captured (:attr:`VocodeBatcher.lengths`) — and drops their audio before the caller's
``post`` (960 samples a token). More left context costs little: a chunk's vocoding is latency-bound (on the
H100 the flow took 111 ms for 58 tokens, 95 ms for 12), while two batch-1 calls cost twice. So the last, shorter chunk
of one stream rides along with another stream's steady chunk instead of taking a turn of its own.

A stream that fell behind (T3 decoded two or more chunks' tokens while its last chunk was vocoded: at c=4 on
the H100, 2026-12-07, the last stream of a level left six 120 ms calls of batch 1 one after another, each
waiting for the one before) queues those chunks at once (:meth:`VocodeBatcher.vocode_many`) and they share one
call. A stream's chunks are chained (``_Job.after``): none is taken before the one ahead of it, so their
``post`` steps (crossfade, watermark) run in stream order.

Preemption (``preempt=True``, ``serve-chatterbox --vocoder-preempt on``): a first chunk that arrives while a
batch of later chunks is being vocoded need not wait for the whole call (up to 221 ms for a batch of four on
the H100). Between two CFM steps of a batch without first chunks (:attr:`GraphEuler.between`), the thread looks
for waiting first chunks and vocodes them there, whole, then goes on with the batch, its Euler state kept
(:meth:`_EulerEntry.snapshot`). Graph launches return before the GPU runs them, so the thread paces the batch:
it keeps at most :data:`PACE_AHEAD` steps queued on the GPU (a CUDA event per step), so that the first chunk's
kernels queue behind a step or two rather than behind the rest of the batch. Same stream, same thread: nothing
runs concurrently that did not before. The batch's numbers are those of its Euler steps, unchanged; only the
draws from the shared generators happen in another order (HiFT's phase), as they already did when streams
interleaved.

Yielding to T3 (``yield_t3=True``, ``--vocoder-yield on``): measured on the H100 (2026-12-07,
docs/benchmarks/chatterbox-http-h100-preempt.json), a first chunk at c=4 waited only 35-65 ms (p50) for the
vocoder, yet first audio was ~400 ms: a new request's first tokens were decoded while batches of later chunks
ran on the vocoder's high-priority stream, and a batch of one later chunk took 191-222 ms there against 120 ms
at c=1. So while any request is still decoding toward its first chunk (:meth:`expect_first`), a batch of later
chunks does not start, and one in progress pauses between CFM steps, until that first chunk is submitted, for
:data:`YIELD_MAX_S` at most per batch: T3 has the GPU to itself for those few tokens. Later chunks have slack (at c=4
each stream is generated about twice as fast as it plays).

Every call is traced (:meth:`state`'s ``trace``: start, duration, batch, length, first chunks, and each job's
wait from submission to the call's start), so a run shows where a first chunk waited.

Numbers: a batch of one is exactly :meth:`FastChatterbox.vocode` (one stream decodes bit-equal to before). In
a batch, each row's arithmetic is the same as alone up to the rounding of a different GEMM shape; the CFM's
starting noise and HiFT's random phase are drawn for the whole batch, so a row gets different draws than it
would alone — as it already did when streams interleaved (the generators are shared by all requests).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ttsbench.chatterbox.fast import SAMPLES_PER_TOKEN  # fast imports this module lazily: no cycle
from ttsbench.metrics import ms_dist

PACE_AHEAD = 2  # CFM steps a preemptible batch keeps queued on the GPU ahead of the vocoder thread
YIELD_MAX_S = 0.25  # longest a batch of later chunks waits for a request's first tokens (prefill + 12 steps)
# with deadlines: a batch of later chunks yields only while each of its streams has at least this much audio left
# to play beyond the yield (a batch of later chunks took 200-380 ms to vocode next to T3 at c=4 on the H100)
DEADLINE_SLACK_S = 0.4
TRACE_CALLS = 160  # vocoder calls kept in the trace (a c=4 level of the HTTP benchmark makes about 70)
TRACE_WAITS = 1000  # waits kept per kind for the state's distribution


@dataclass(eq=False)  # identity: jobs hold tensors
class _Job:
    tokens: torch.Tensor  # 1-D valid speech tokens on the device
    urgent: bool  # a request's first chunk
    seq: int
    post: Callable[[Any], Any] | None = None  # the caller's finishing step (seam, watermark), run here
    done: threading.Event = field(default_factory=threading.Event)
    wav: Any = None  # float32 numpy (samples,)
    error: BaseException | None = None
    prefix: torch.Tensor | None = None  # earlier tokens of the sentence, available as more left context
    t_submit: float = field(default_factory=time.perf_counter)
    decode_ms: float | None = None  # a first chunk: from its request's expect_first() to this submission
    after: _Job | None = None  # the same stream's chunk before this one (taken first: posts run in order)
    deadline: float | None = None  # perf_counter time at which its stream's listener runs out of audio

    def fits(self, n: int) -> bool:
        """Whether this job can be vocoded at ``n`` tokens (its own, or more with left context prepended)."""
        have = len(self.tokens)
        return have == n or (have < n <= have + (0 if self.prefix is None else len(self.prefix)))

    def row(self, n: int) -> torch.Tensor:
        extra = n - len(self.tokens)
        return self.tokens if extra == 0 else torch.cat([self.prefix[len(self.prefix) - extra :], self.tokens])


class _Expected:
    """:meth:`VocodeBatcher.expect_first`'s release (idempotent), with the time the request started decoding."""

    def __init__(self, vb: VocodeBatcher) -> None:
        self.vb = vb
        self.t0 = time.perf_counter()
        self.released = False

    def __call__(self) -> None:
        with self.vb._cv:
            if self.released:
                return
            self.released = True
            self.vb._expecting -= 1
            self.vb._cv.notify_all()


class VocodeBatcher:
    """The vocoder thread of one :class:`~ttsbench.chatterbox.fast.FastChatterbox`."""

    def __init__(
        self,
        fast: Any,
        max_batch: int = 4,
        lengths: tuple[int, ...] = (),
        preempt: bool = False,
        yield_t3: bool = False,
        deadlines: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.fast = fast
        self.max_batch = max_batch
        self.preempt = preempt
        self.yield_t3 = yield_t3
        self.deadlines = deadlines  # later chunks by playback deadline; yields only with slack (see _yield)
        self._hand: float | None = None  # the earliest deadline of the batch being vocoded
        self.slack_refusals = 0  # yields not made (or cut short) because a stream would have run out of audio
        self._expecting = 0  # requests decoding toward their first chunk (expect_first)
        self.yields = 0  # waits for a request's first tokens
        self.yield_s = 0.0
        self._held = 0.0  # seconds the batch in hand has been held so far (at most YIELD_MAX_S in all)
        self.preemptions = 0  # first-chunk calls made between the CFM steps of another batch
        self._pace: deque[Any] = deque()  # CUDA events of the steps queued by a preemptible batch
        self._t0 = time.perf_counter()
        self._trace: deque[dict[str, Any]] = deque(maxlen=TRACE_CALLS)
        # ms from a job's submission to its call's start, the latest TRACE_WAITS of each kind
        self._waits: dict[str, deque[float]] = {k: deque(maxlen=TRACE_WAITS) for k in ("first", "later")}
        self.lengths = tuple(sorted(set(lengths)))  # chunk lengths whose batch graphs are captured (warmup)
        self.extended = 0  # rows given more left context to join a batch
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

    def vocode(
        self,
        tokens: torch.Tensor,
        urgent: bool = False,
        post: Callable[[Any], Any] | None = None,
        prefix: torch.Tensor | None = None,
        first_in: Callable[[], None] | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Float32 numpy waveform (samples,) of 1-D valid speech tokens, vocoded with whatever else is due;
        ``post(wav)``'s result instead where given. ``post`` runs on the vocoder thread in the same turn (on its
        high-priority stream, T3 held for a first chunk): GPU work there is not starved by T3 steps.
        ``prefix``: the tokens before ``tokens`` in the sentence; some of them may be vocoded as more left
        context to batch this chunk with longer ones (their audio is dropped: the result is the same length).
        ``first_in``: :meth:`expect_first`'s release, called as the job is queued (one step: the thread never
        sees the request neither expected nor queued, so it cannot start later chunks in between).
        ``deadline``: ``time.perf_counter()`` at which the stream's listener runs out of audio without this chunk
        (with ``deadlines``: later chunks are taken earliest deadline first, and yield only with slack)."""
        return self.vocode_many([(tokens, prefix, post)], urgent=urgent, first_in=first_in, deadline=deadline)[0]

    def vocode_many(
        self,
        chunks: list[tuple[torch.Tensor, torch.Tensor | None, Callable[[Any], Any] | None]],
        urgent: bool = False,
        first_in: Callable[[], None] | None = None,
        deadline: float | None = None,
    ) -> list[Any]:
        """:meth:`vocode` for consecutive chunks of one stream, ``(tokens, prefix, post)`` each, queued at once so
        that they can share one call (a stream that fell behind catches up in one call instead of one per
        chunk). A chunk is never taken before the one ahead of it, so the posts run in order: a stream's
        crossfade carries from chunk to chunk."""
        with self._cv:  # an RLock: first_in takes it again
            if self._stop:
                if first_in is not None:
                    first_in()
                raise RuntimeError("the vocoder thread was closed")
            jobs: list[_Job] = []
            for tokens, prefix, post in chunks:
                job = _Job(tokens, urgent, self._seq, post, prefix=prefix, after=jobs[-1] if jobs else None)
                job.deadline = deadline  # the earliest of them: its listener runs out of audio first
                if isinstance(first_in, _Expected) and not first_in.released:
                    job.decode_ms = (job.t_submit - first_in.t0) * 1e3  # the request's decoding up to this chunk
                self._seq += 1
                jobs.append(job)
            self._jobs.extend(jobs)
            if first_in is not None:
                first_in()
            self._cv.notify_all()
        for job in jobs:
            job.done.wait()
        for job in jobs:
            if job.error is not None:
                raise RuntimeError(f"vocoding failed: {job.error}") from job.error
        return [job.wav for job in jobs]

    def expect_first(self) -> Callable[[], None]:
        """A request starts decoding toward its first chunk; call the returned function (idempotent) once that
        chunk is submitted or the request ends without one. With ``yield_t3``, batches of later chunks wait
        meanwhile (:meth:`_yield`)."""
        with self._cv:
            self._expecting += 1
        return _Expected(self)

    def _yield(self) -> None:
        """With ``yield_t3``: while a request decodes toward its first chunk and no first chunk waits, hold off,
        so that its tokens are not decoded next to a batch of later chunks. A batch is held :data:`YIELD_MAX_S`
        at most in all (before it starts and between its steps), whatever keeps a request from its first chunk.
        With ``deadlines``, only while every waiting later chunk and the batch in hand keep more than
        :data:`DEADLINE_SLACK_S` of audio to play: a new request's first audio never costs a gap elsewhere."""
        if not self.yield_t3 or self._held >= YIELD_MAX_S:
            return
        t0 = time.perf_counter()
        budget_end = t0 + YIELD_MAX_S - self._held  # one budget for a batch: before it starts and between its steps
        with self._cv:
            if not self._decoding_first() or self._stop or any(j.urgent for j in self._jobs):
                return
            if self._slack() <= DEADLINE_SLACK_S:  # a stream already playing would run out: no yield
                self.slack_refusals += 1
                return
            self.yields += 1
            while self._decoding_first() and not self._stop and not any(j.urgent for j in self._jobs):
                left = min(budget_end - time.perf_counter(), self._slack() - DEADLINE_SLACK_S)
                if left <= 0:
                    self.slack_refusals += budget_end - time.perf_counter() > 0  # cut short by a listener
                    break
                self._cv.wait(left)
        held = time.perf_counter() - t0
        self.yield_s += held
        self._held += held

    def _decoding_first(self) -> int:
        """Requests decoding toward their first chunk now: those expected, less any still waiting for a T3 slot
        (holding later chunks back cannot speed those up, and would slow the requests whose slots they wait for)."""
        sched = getattr(self.fast, "scheduler", None)
        return self._expecting - (sched.queued() if sched is not None else 0)

    def _take(self) -> tuple[list[_Job], int]:
        """The most urgent job (urgent first; then the earliest playback deadline with ``deadlines``; then the
        oldest; never a chunk while the chunk ahead of it in its stream still waits) and the waiting jobs that can
        be vocoded with it, up to max_batch, and their common length: the head's own, or a longer one it reaches
        with more left context, whichever takes the most jobs (the shorter on a tie). Once :attr:`lengths` are
        known, jobs are batched only at those lengths (a batch of a shape without graphs runs eagerly, slower
        than one by one)."""
        waiting = {id(j) for j in self._jobs}

        def ready(j: _Job, chosen: list[_Job]) -> bool:  # a stream's chunk never goes before the one ahead of it
            return j.after is None or id(j.after) not in waiting or any(c is j.after for c in chosen)

        order = sorted(self._jobs, key=self._rank)
        head = next(j for j in order if ready(j, []))  # the first job of a chain is always ready
        best: list[_Job] = [head]
        n_best = len(head.tokens)
        for n in (len(head.tokens), *(m for m in self.lengths if m > len(head.tokens))):
            if self.lengths and n not in self.lengths:
                continue  # no batch graphs at this length: a batch would run eagerly, slower than one by one
            if not head.fits(n):
                continue
            group = [head]
            for j in order:
                if len(group) < self.max_batch and j is not head and j.fits(n) and ready(j, group):
                    group.append(j)
            group.sort(key=self._rank)
            if len(group) > len(best):
                best, n_best = group, n
        for j in best:
            self._jobs.remove(j)
        return best, n_best

    def _rank(self, j: _Job) -> tuple:
        """Urgent (first chunks) first; then, with ``deadlines``, the earliest playback deadline; then the oldest."""
        dl = j.deadline if self.deadlines and j.deadline is not None else float("inf")
        return (not j.urgent, dl, j.seq)

    def _slack(self) -> float:
        """Seconds until the first listener of a waiting later chunk or of the batch in hand runs out of audio
        (inf without deadlines)."""
        if not self.deadlines:
            return float("inf")
        dls = [j.deadline for j in self._jobs if not j.urgent and j.deadline is not None]
        if self._hand is not None:
            dls.append(self._hand)
        return min(dls, default=float("inf")) - time.perf_counter()

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
                self._held = 0.0
                self._yield()  # a batch of later chunks waits while a request decodes its first tokens
                with self._cv:
                    if self._stop:
                        return
                    if not self._jobs:
                        continue
                    group, n = self._take()
                self._call(group, n)

    def _call(self, group: list[_Job], n: int, nested: bool = False) -> None:
        """Vocode ``group`` at ``n`` tokens, run each job's ``post`` and wake its caller. ``nested``: called
        between the CFM steps of another batch (:meth:`_between`), which holds the S3Gen lock already."""
        f = self.fast
        t0 = time.perf_counter()
        urgent = any(j.urgent for j in group)
        preemptible = (self.preempt or self.yield_t3) and not urgent and not nested
        if not nested:
            self._hand = min((j.deadline for j in group if j.deadline is not None), default=None)
        for j in group:
            self._waits["first" if j.urgent else "later"].append((t0 - j.t_submit) * 1e3)
        try:
            # s3_lock: a whole-utterance synthesize() on another thread uses the same S3Gen graphs
            lock = contextlib.nullcontext() if nested else f.s3_lock.urgent() if urgent else f.s3_lock
            with lock, self._hold(urgent):
                if preemptible:
                    f.euler.between = self._between
                try:
                    wavs = self.run(torch.stack([j.row(n) for j in group]))
                finally:
                    if preemptible:
                        f.euler.between = None
                        self._pace.clear()
                for j, w in zip(group, wavs, strict=True):
                    extra = n - len(j.tokens)
                    self.extended += extra > 0
                    w = w[extra * SAMPLES_PER_TOKEN :]  # the prepended context's audio
                    j.wav = j.post(w) if j.post is not None else w
        except BaseException as exc:  # every waiting caller hears of it; the thread keeps serving
            for j in group:
                j.error = exc
        finally:
            t1 = time.perf_counter()
            if not nested:  # a nested call's time is inside its outer call's
                self.busy_s += t1 - t0
                self._hand = None
            self.batches[len(group)] = self.batches.get(len(group), 0) + 1
            self._trace.append(
                {
                    "t_ms": round((t0 - self._t0) * 1e3, 1),
                    "ms": round((t1 - t0) * 1e3, 1),
                    "b": len(group),
                    "n": n,
                    "first": sum(j.urgent for j in group),
                    "nested": nested,
                    "wait_ms": [round((t0 - j.t_submit) * 1e3, 1) for j in group],
                    "decode_ms": [None if j.decode_ms is None else round(j.decode_ms, 1) for j in group],
                    # audio each row's listener had left when the call started (negative: it had run out)
                    "slack_ms": [None if j.deadline is None else round((j.deadline - t0) * 1e3, 1) for j in group],
                }
            )
            for j in group:
                j.done.set()

    def _between(self, entry: Any) -> None:
        """Between two CFM steps of a batch of later chunks: pace it (at most :data:`PACE_AHEAD` steps queued on
        the GPU), hold it while a request decodes its first tokens (``yield_t3``), then vocode any waiting first
        chunks (``preempt``), keeping the batch's Euler state."""
        f = self.fast
        if f.device.type == "cuda":
            ev = torch.cuda.Event()
            ev.record()
            self._pace.append(ev)
            while len(self._pace) > PACE_AHEAD:
                self._pace.popleft().synchronize()
        self._yield()
        if not self.preempt:
            return
        with self._cv:
            if self._stop or not any(j.urgent for j in self._jobs):
                return
            group, n = self._take()  # headed by a first chunk
        saved = entry.snapshot()  # a nested call of the same shape reuses this entry's buffers
        self.preemptions += 1
        f.euler.between = None  # the nested call is not preempted itself
        try:
            self._call(group, n, nested=True)
        finally:
            entry.restore(saved)
            f.euler.between = self._between
            self._pace.clear()  # the nested call ended with a host copy: every queued step has run

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
        self.lengths = tuple(sorted(set(self.lengths) | set(lengths)))
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
            "lengths": list(self.lengths),
            "extended": self.extended,
            "busy_s": round(self.busy_s, 3),
            "preempt": self.preempt,
            "preemptions": self.preemptions,
            "yield_t3": self.yield_t3,
            "expecting": self._expecting,  # requests decoding toward a first chunk now (0 when idle)
            "deadlines": self.deadlines,
            "slack_refusals": self.slack_refusals,
            "yields": self.yields,
            "yield_s": round(self.yield_s, 3),
            "wait_ms": {k: ms_dist(list(v)) for k, v in self._waits.items()},
            "trace": list(self._trace),
            "trace_max": TRACE_CALLS,
        }
