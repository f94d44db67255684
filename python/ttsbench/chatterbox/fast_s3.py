"""Shape-keyed CUDA graphs for S3Gen's flow encoder (part of the fast path's fixed per-call cost).

Each S3Gen call runs the conformer flow encoder over prompt + new tokens: a few hundred small kernels launched
eagerly from Python. For the shapes the streaming path repeats (first chunk, full chunks) launch overhead
dominates, so :class:`GraphedCall` captures one call per input shape in a CUDA graph and replays it (same
kernels, same inputs: same numbers; outputs are cloned out of the graph's memory). On the H100 this took the
first chunk's vocoding from 133 to 113 ms, bit-equal (docs/benchmarks/chatterbox-fast-path.json).

Capture forbids host syncs: the encoder's ``add_optional_chunk_mask`` checks for all-False rows with ``.item()``;
while capturing it is the sync-free equivalent (:func:`sync_free_chunk_mask`, identical for static_chunk_size 0,
which S3Gen's encoder and CFM estimator use). Anything that still fails to capture is recorded in ``error``
and that wrapper runs eagerly from then on.

HiFT as released cannot be captured: its sine source copies CPU tensors (a zeros buffer, the phase drawn on
the CPU generator, the STFT window) to the GPU on every call (measured: "Cannot copy between CPU and CUDA
tensors during CUDA graph capture"). :class:`~ttsbench.chatterbox.fast_hift.GraphedHift` draws the phase
before the replay and feeds it in as an input, so the numbers stay upstream's; it is opt-in
(``--hift graph``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def sync_free_chunk_mask(
    modules: tuple[str, ...] = (
        "chatterbox.models.s3gen.decoder",
        "chatterbox.models.s3gen.transformer.upsample_encoder",
    ),
) -> Iterator[None]:
    """Swap ``add_optional_chunk_mask`` in ``modules`` for a version without the host sync (graph capture)."""
    import importlib

    saved: dict[Any, Any] = {}
    for name in modules:
        mod = importlib.import_module(name)
        orig = mod.add_optional_chunk_mask
        saved[mod] = orig

        def chunk_mask(
            xs: Any,
            masks: torch.Tensor,
            use_dynamic_chunk: bool,
            use_dynamic_left_chunk: bool,
            decoding_chunk_size: int,
            static_chunk_size: int,
            num_decoding_left_chunks: int,
            enable_full_context: bool = True,
            _orig: Any = orig,
        ) -> torch.Tensor:
            if use_dynamic_chunk or static_chunk_size > 0:
                return _orig(
                    xs,
                    masks,
                    use_dynamic_chunk,
                    use_dynamic_left_chunk,
                    decoding_chunk_size,
                    static_chunk_size,
                    num_decoding_left_chunks,
                    enable_full_context,
                )
            # upstream: rows that are all False are set True (after a host-side check); same, without the sync
            return masks | (masks.sum(dim=-1, keepdim=True) == 0)

        mod.add_optional_chunk_mask = chunk_mask
    try:
        yield
    finally:
        for mod, orig in saved.items():
            mod.add_optional_chunk_mask = orig


def _flat(obj: Any) -> list[torch.Tensor]:
    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _flat(o)]
    return []


def _rebuild(obj: Any, it: Iterator[torch.Tensor]) -> Any:
    if torch.is_tensor(obj):
        return next(it)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_rebuild(o, it) for o in obj)
    return obj


NEVER_EVICT = """Graph caches here never drop a graph while the process may still replay others.

torch's ``CUDAGraph`` reset (a graph destroyed) clears the cuBLAS workspaces of its capture stream
(``clearCublasWorkspacesForStream``), and every graph captured on that stream — ``torch.cuda.graph``'s one default
capture stream, so all of ours — embeds that workspace's address: the others would replay GEMMs into freed
memory, which a later capture in a shared pool may hand out again (pytorch/pytorch#193402, open). So a full
cache runs new shapes eagerly instead of evicting the least recently used graph, and a capture error keeps the
graphs held (unused). Serving captures every shape it needs at warm-up and never reaches the limit."""


def graphable(t: torch.Tensor) -> bool:
    """Whether a call on ``t`` may replay or capture a CUDA graph (tests replace this to drive the caches)."""
    return t.device.type == "cuda"


class _Entry:
    def __init__(self, args: tuple) -> None:
        self.args = tuple(a.clone() if torch.is_tensor(a) else a for a in args)  # static inputs
        self.out: Any = None
        self.graph: Any = None


class GraphedCall:
    """``fn(*args)`` replayed from a CUDA graph per distinct tensor-argument signature (up to ``max_cached``).

    The first call of a signature runs eagerly (warm-up: caches, workspace, plan creation), the second captures
    and replays. ``capture_ctx`` (a context-manager factory) is entered around warm-up and capture — e.g. the
    sync-free mask or the conv istft. On anything but CUDA, or after a capture error, ``fn`` runs eagerly.
    Once ``max_cached`` graphs are held, a new signature runs eagerly too (``uncached`` counts those calls): see
    :data:`NEVER_EVICT`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        max_cached: int = 6,
        capture_ctx: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.max_cached = max_cached
        self.capture_ctx = capture_ctx or contextlib.nullcontext
        self.error: str | None = None
        self.frozen = False  # True: no new captures (concurrent serving); unseen shapes run eagerly
        self.captures = 0
        self.replays = 0
        self.uncached = 0
        self._seen: set[tuple] = set()
        self._cache: dict[tuple, _Entry] = {}
        self._pool: Any = None

    @staticmethod
    def _key(args: tuple) -> tuple:
        return tuple((tuple(a.shape), a.dtype, a.device) if torch.is_tensor(a) else ("v", a) for a in args)

    def __call__(self, *args: Any) -> Any:
        tensors = [a for a in args if torch.is_tensor(a)]
        if self.error is not None or not tensors or not graphable(tensors[0]):
            return self.fn(*args)
        key = self._key(args)
        e = self._cache.get(key)
        if e is None and (self.frozen or len(self._cache) >= self.max_cached):
            self.uncached += 1
            return self.fn(*args)
        if e is None:
            if key not in self._seen:  # first sight: eager warm-up under the capture context
                self._seen.add(key)
                with self.capture_ctx():
                    return self.fn(*args)
            e = self._capture(key, args)
            if e is None:
                return self.fn(*args)
        for static, a in zip(e.args, args, strict=True):
            if torch.is_tensor(static):
                static.copy_(a)
        e.graph.replay()
        self.replays += 1
        return _rebuild(e.out, iter([t.clone() for t in _flat(e.out)]))

    def _capture(self, key: tuple, args: tuple) -> _Entry | None:
        e = _Entry(args)
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            g = torch.cuda.CUDAGraph()
            with self.capture_ctx(), torch.cuda.graph(g, pool=self._pool):
                e.out = self.fn(*e.args)
            e.graph = g
        except RuntimeError as exc:  # the graphs held stay alive (NEVER_EVICT); none is replayed any more
            self.error = f"{self.name}: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            torch.cuda.synchronize()
            return None
        self.captures += 1
        self._cache[key] = e
        return e

    def state(self) -> dict[str, Any]:
        return {
            "captures": self.captures,
            "replays": self.replays,
            "cached": len(self._cache),
            "uncached": self.uncached,
            "error": self.error,
        }


class S3Graphs:
    """The graphed flow encoder of one S3Gen (``model.s3gen``), and its graphed HiFT where one is given
    (:class:`~ttsbench.chatterbox.fast_hift.GraphedHift`); :meth:`installed` swaps them in."""

    def __init__(self, s3gen: Any, max_cached: int = 24, hift: Any = None) -> None:
        self.s3 = s3gen
        enc = s3gen.flow.encoder
        self.encoder = GraphedCall(
            lambda *a: type(enc).forward(enc, *a), "flow encoder", max_cached, capture_ctx=sync_free_chunk_mask
        )
        self.hift = hift

    @contextlib.contextmanager
    def installed(self, encoder: bool = True) -> Iterator[None]:
        """The graphed parts swapped in for the block. Re-entrant: a nested call (a first chunk vocoded between
        the CFM steps of a steady batch) leaves the outer installation as it found it."""
        enc = self.s3.flow.encoder
        with contextlib.ExitStack() as stack:
            if encoder and enc.__dict__.get("forward") is not self.encoder:
                enc.forward = self.encoder
                stack.callback(enc.__dict__.pop, "forward", None)
                if self.hift is not None:
                    stack.enter_context(self.hift.installed())
            yield

    def widen(self, n: int) -> None:
        """Keep at least ``n`` shapes of each graphed part (concurrent serving: batch sizes x chunk lengths)."""
        for g in self._calls():
            g.max_cached = max(g.max_cached, n)

    def freeze(self) -> None:
        for g in self._calls():
            g.frozen = True

    def _calls(self) -> list[GraphedCall]:
        return [self.encoder] + ([self.hift.call] if self.hift is not None else [])

    @property
    def error(self) -> str | None:
        return next((g.error for g in self._calls() if g.error), None)

    def state(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state()} | ({"hift": self.hift.call.state()} if self.hift else {})


def seeded(flow: Callable[[], torch.Tensor], seed: int = 0) -> torch.Tensor:
    """``flow()`` as float32 with every generator (CPU, current CUDA device) seeded to ``seed``; the caller's
    generator states are restored afterwards."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return flow().float()


class CompiledEstimator:
    """The CFM estimator through ``torch.compile`` (inductor), replayed inside :class:`GraphEuler`'s step graphs.

    Why: the estimator is a few thousand small kernels per Euler step; captured in a graph they still run one
    after another, each too small to fill the GPU (on the H100 the flow took ~95 ms for a 12-token chunk and
    ~111 ms for 58 tokens: latency, not work). Inductor fuses the elementwise work into fewer kernels.

    What it costs: the fused kernels round differently, so S3Gen is no longer bit-equal to upstream. Opt-in
    (``serve-chatterbox --s3-compile on``); :meth:`check` measures the distance from the eager estimator on
    the first-chunk shape and refuses (back to eager, ``error`` set) above ``max_rel_rms``. Dynamic shapes: one
    compile serves every chunk length and batch size. While it is on, the vocoder runs under
    :func:`sync_free_chunk_mask` (same numbers, no graph break at the mask's host check, and the compiled code's
    guards see one function both eagerly and while a graph is captured)."""

    def __init__(self, cfm: Any, max_rel_rms: float = 1e-3) -> None:
        self.cfm = cfm
        self.eager = cfm.estimator
        self.max_rel_rms = max_rel_rms
        self.active = False
        self.error: str | None = None
        self.rel_rms: float | None = None
        self.max_abs: float | None = None
        self.compile_s: float | None = None

    def check(self, flow: Callable[[], torch.Tensor]) -> bool:
        """Compile, run ``flow()`` (the flow's mel for a fixed input) eagerly and compiled, compare, keep or
        refuse. True when the compiled estimator is installed. Both runs draw the same noise: chatterbox 0.1.7's
        ``CausalConditionalCFM.forward`` starts from ``torch.randn_like(mu)``, so two unseeded runs differ by
        the noise alone (relative RMS 0.93 on the H200, 2026-12-07, which refused every compile)."""
        import time

        try:
            with torch.no_grad(), sync_free_chunk_mask():
                ref = seeded(flow)
                t0 = time.perf_counter()
                self.cfm.estimator = torch.compile(self.eager, dynamic=True)
                got = seeded(flow)
                self.compile_s = time.perf_counter() - t0
            err = got - ref
            self.max_abs = float(err.abs().max())
            self.rel_rms = float(err.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-12))
            if not (self.rel_rms <= self.max_rel_rms):  # NaN refuses too
                raise RuntimeError(f"compiled estimator differs from eager: rel rms {self.rel_rms:.2e}")
        except Exception as exc:  # compile or check failed: the eager estimator stays
            self.cfm.estimator = self.eager
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return False
        self.active = True
        return True

    def state(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "error": self.error,
            "rel_rms_vs_eager": self.rel_rms,
            "max_abs_vs_eager": self.max_abs,
            "compile_s": self.compile_s,
        }
