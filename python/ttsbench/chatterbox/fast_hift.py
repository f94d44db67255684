"""HiFT without host syncs: the same numbers, without a blocking CPU→GPU copy on every vocoder call.

chatterbox-tts 0.1.7's HiFT vocoder (``chatterbox.models.s3gen.hifigan``) copies CPU tensors to the GPU with
blocking ``.to(device)`` on every call:

* ``SineGen.forward`` builds its ``[B, harmonics, samples]`` buffer with ``torch.zeros`` on the CPU (~1.7 MB
  for a 2 s chunk), and draws the harmonics' random phase on the CPU generator;
* ``HiFTGenerator._stft`` / ``_istft`` copy the Hann window (a CPU attribute) to the GPU.

A blocking host→device copy waits for everything already queued on the stream. Here that is the flow's
CFM steps, so the vocoder thread sits idle until the GPU has finished them, and only then launches HiFT's
many small kernels one by one. The H200 profile at concurrency 4
(docs/benchmarks/chatterbox-http-c4-profile.json) found the vocoder thread in that ``.to()`` for 61% of its
non-idle samples.

What this changes, with outputs bit-equal to upstream:

* the sine buffer is made on the device (zeros are zeros);
* the phase is still drawn by upstream's ``Uniform`` on the CPU generator, so a seed gives the same values as
  upstream. It is copied from pinned memory without blocking (on CUDA);
* the window is moved to the device once, so upstream's ``.to(x.device)`` is a no-op.

With no blocking copy left, HiFT can be replayed from a CUDA graph (:class:`GraphedHift`): everything before
the inverse STFT (f0 predictor, sine source, source STFT, the upsampling convolutions and resblocks) is
captured once per mel shape. Upstream's numbers are kept:

* the phase is still drawn on the CPU generator before each replay, with upstream's ``Uniform`` and shape, and
  copied into the graph's input;
* the noise (``randn_like`` in the sine generator and the source module) comes from the CUDA generator, which
  torch makes graph-safe: a replay draws what the eager call would draw from the same generator state;
* the inverse STFT and the clamp run eagerly after the replay (torch's ``istft`` checks its window envelope
  on the host).

Modes (``serve-chatterbox --hift upstream|sync-free|graph``, ``FastChatterbox(hift=...)``): ``upstream`` is
chatterbox as released. The other two are bit-equal on the CPU (tests/test_chatterbox_fast.py). On the GPU
``sync-free`` is bit-equal to upstream (H200). ``graph`` differed from one upstream call by up to 7.5e-5 at one
chunk shape (58 tokens, batch 1), but two upstream calls with the same input and seed differ there too (5.1e-5 on
the H100): cuDNN's default algorithm for HiFT's transposed convolutions is not deterministic at that shape. With
deterministic cuDNN (or TF32 off, or cuDNN off) the replay equals the eager call bit for bit at every shape
(``benchmarks/hift_graph_diff.py``, docs/benchmarks/hift-graph-diff-h100.json). The server defaults to ``graph``;
the in-process ``FastChatterbox`` to ``upstream``. ``benchmarks/chatterbox_http.py --hift`` checks the equality
(max_abs) and times each mode, ``--ab 'NAME=--hift MODE'`` over HTTP.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

MODES = ("upstream", "sync-free", "graph")


def draw_phase(gen: Any, batch: int) -> torch.Tensor:
    """The harmonics' random phase as upstream draws it: ``Uniform(-pi, pi)`` on the CPU generator."""
    from torch.distributions.uniform import Uniform

    return Uniform(low=-np.pi, high=np.pi).sample(sample_shape=(batch, gen.harmonic_num + 1, 1))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``: on CUDA through pinned memory without blocking the host."""
    cuda = device.type == "cuda"
    return (t.pin_memory() if cuda else t).to(device, non_blocking=cuda)


@torch.no_grad()
def sine_forward(gen: Any, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``SineGen.forward`` of chatterbox 0.1.7 with device-side allocation (see the module docstring). While
    :class:`GraphedHift` runs, the phase it drew before the call is used instead of a new draw."""
    harmonics = gen.harmonic_num + 1
    f_mat = torch.zeros((f0.size(0), harmonics, f0.size(-1)), device=f0.device)
    for i in range(harmonics):
        f_mat[:, i : i + 1, :] = f0 * (i + 1) / gen.sampling_rate
    theta = 2 * np.pi * (torch.cumsum(f_mat, dim=-1) % 1)
    phase = gen.__dict__.get("_ttsbench_phase")
    if phase is None:
        phase = to_device(draw_phase(gen, f0.size(0)), f0.device)
    phase[:, 0, :] = 0
    sine = gen.sine_amp * torch.sin(theta + phase)
    uv = gen._f02uv(f0)
    noise_amp = uv * gen.noise_std + (1 - uv) * gen.sine_amp / 3
    noise = noise_amp * torch.randn_like(sine)
    return sine * uv + noise, uv, noise


def install(hift: Any, device: torch.device) -> dict[str, Any]:
    """Make ``hift`` (a ``HiFTGenerator``) sync-free on ``device``. Returns what was changed (for /health)."""
    done: dict[str, Any] = {"sine": False, "window": False}
    window = getattr(hift, "stft_window", None)
    if isinstance(window, torch.Tensor) and window.device != device:
        hift.stft_window = window.to(device)
        done["window"] = True
    gen = getattr(getattr(hift, "m_source", None), "l_sin_gen", None)
    if gen is not None and all(hasattr(gen, a) for a in ("harmonic_num", "sampling_rate", "sine_amp", "noise_std")):
        gen.forward = types.MethodType(sine_forward, gen)
        done["sine"] = True
    return done


class GraphedHift:
    """``HiFTGenerator.inference`` with everything before the inverse STFT replayed from a CUDA graph per mel
    shape (:class:`~ttsbench.chatterbox.fast_s3.GraphedCall`: first sight of a shape warms up, the second
    captures). :meth:`installed` swaps it in for upstream's ``inference``; off CUDA the same split runs eagerly."""

    def __init__(self, hift: Any, device: torch.device, max_cached: int = 6) -> None:
        from ttsbench.chatterbox.fast_s3 import GraphedCall

        self.hift = hift
        self.sync_free = install(hift, device)
        self.gen = hift.m_source.l_sin_gen
        self.call = GraphedCall(self._front, "hift", max_cached)

    def _front(self, mel: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Upstream's inference up to the iSTFT's input: (magnitude, phase, source)."""
        hift, held = self.hift, {}

        def hold(magnitude: torch.Tensor, ph: torch.Tensor) -> torch.Tensor:
            held["m"], held["p"] = magnitude, ph
            return magnitude[:, :1, :]  # decode clamps whatever _istft returns; this result is dropped

        self.gen._ttsbench_phase = phase
        hift._istft = hold
        try:
            f0 = hift.f0_predictor(mel)
            s = hift.f0_upsamp(f0[:, None]).transpose(1, 2)
            s, _, _ = hift.m_source(s)
            s = s.transpose(1, 2)
            hift.decode(x=mel, s=s)
        finally:
            del hift._istft
            del self.gen._ttsbench_phase
        return held["m"], held["p"], s

    @torch.inference_mode()
    def inference(
        self, speech_feat: torch.Tensor, cache_source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hift = self.hift
        if cache_source is not None and cache_source.shape[2] != 0:  # the cached-source path: upstream's
            return type(hift).inference(hift, speech_feat, cache_source)
        phase = to_device(draw_phase(self.gen, speech_feat.size(0)), speech_feat.device)
        front = self.call if speech_feat.device.type == "cuda" else self._front
        magnitude, ph, s = front(speech_feat, phase)
        wav = type(hift)._istft(hift, magnitude, ph)
        return torch.clamp(wav, -hift.audio_limit, hift.audio_limit), s

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The graphed inference swapped in for the block (re-entrant: an inner block leaves it installed)."""
        if self.hift.__dict__.get("inference") == self.inference:
            yield
            return
        self.hift.inference = self.inference
        try:
            yield
        finally:
            self.hift.__dict__.pop("inference", None)

    @property
    def error(self) -> str | None:
        return self.call.error

    def state(self) -> dict[str, Any]:
        return {**self.call.state(), "sync_free": self.sync_free}
