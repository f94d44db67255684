"""The fast Chatterbox path: fast T3 decoding + S3Gen/HiFT on the same stream, whole or chunked (streaming).

``FastChatterbox(model)`` wraps a loaded ``ChatterboxTTS`` (upstream object, upstream weights):

* ``synthesize(text, params, max_new_tokens)`` = ``ChatterboxTTS.generate`` with T3 replaced by
  :class:`~ttsbench.chatterbox.fast_t3.FastT3`; S3Gen runs upstream's ``S3Token2Wav.inference`` with one
  change on CUDA: each Euler step of the CFM solver (the estimator called 10 times on the same shapes) is
  captured once per call in a CUDA graph and replayed (same kernels, same inputs: same numbers). Upstream's
  ``add_optional_chunk_mask`` holds a host sync (``.item()``) that graph capture forbids; while capturing it
  is swapped for a sync-free equivalent (identical result for static_chunk_size 0, which S3Gen uses).
* ``stream(text, ...)`` yields float32 audio chunks: the first after ``first_chunk_tokens`` speech tokens are
  decoded and vocoded, then one per ``chunk_tokens``. Each chunk is vocoded with ``context_tokens`` tokens of
  left context whose audio is dropped, and joined with a ``crossfade_ms`` linear crossfade. This is an
  approximation of the whole-utterance vocoding (not bit-equal at the seams).
* the Perth watermark upstream applies after S3Gen is applied here too (per chunk when streaming), with the
  watermarker's network on the model's device.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ttsbench.chatterbox.fast_t3 import FastT3, SamplingParams

SR = 24000
SAMPLES_PER_TOKEN = 960  # 25 tokens/s → 2 mel frames of 480 samples at 24 kHz


@dataclass
class StreamTimings:
    t3_tokens: int = 0
    t3_s: float = 0.0
    s3gen_s: float = 0.0
    watermark_s: float = 0.0
    first_chunk_s: float | None = None
    chunks: list[int] = field(default_factory=list)


@contextlib.contextmanager
def _sync_free_chunk_mask() -> Iterator[None]:
    from chatterbox.models.s3gen import decoder as dec

    orig = dec.add_optional_chunk_mask

    def chunk_mask(xs: Any, masks: torch.Tensor, use_dynamic_chunk: bool, use_dynamic_left_chunk: bool,
                   decoding_chunk_size: int, static_chunk_size: int, num_decoding_left_chunks: int,
                   enable_full_context: bool = True) -> torch.Tensor:
        if use_dynamic_chunk or static_chunk_size > 0:
            return orig(xs, masks, use_dynamic_chunk, use_dynamic_left_chunk, decoding_chunk_size,
                        static_chunk_size, num_decoding_left_chunks, enable_full_context)
        # upstream: rows that are all False are set True (after a host-side check); same, without the sync
        return masks | (masks.sum(dim=-1, keepdim=True) == 0)

    dec.add_optional_chunk_mask = chunk_mask
    try:
        yield
    finally:
        dec.add_optional_chunk_mask = orig


class GraphEuler:
    """Drop-in for ``CausalConditionalCFM.solve_euler`` (non-meanflow) with the step in a CUDA graph."""

    def __init__(self, cfm: Any) -> None:
        self.cfm = cfm
        self.error: str | None = None
        self.graphed_calls = 0

    def __call__(self, x: torch.Tensor, t_span: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor,
                 spks: torch.Tensor, cond: torch.Tensor, meanflow: bool = False) -> torch.Tensor:
        from chatterbox.models.s3gen.flow_matching import cast_all

        cfm = self.cfm
        in_dtype = x.dtype
        x, t_span, mu, mask, spks, cond = cast_all(x, t_span, mu, mask, spks, cond, dtype=cfm.estimator.dtype)
        B, T = mu.size(0), x.size(2)
        kw = {"device": x.device, "dtype": x.dtype}
        x_in = torch.zeros([2 * B, 80, T], **kw)
        mask_in = torch.zeros([2 * B, 1, T], **kw)
        mu_in = torch.zeros([2 * B, 80, T], **kw)
        t_in = torch.zeros([2 * B], **kw)
        spks_in = torch.zeros([2 * B, 80], **kw)
        cond_in = torch.zeros([2 * B, 80, T], **kw)
        mask_in[:B] = mask_in[B:] = mask
        mu_in[:B] = mu
        spks_in[:B] = spks
        cond_in[:B] = cond
        xs = x.clone()
        t_cur = torch.zeros(1, **kw)
        r_cur = torch.zeros(1, **kw)
        rate = cfm.inference_cfg_rate

        def step() -> None:
            x_in[:B] = xs
            x_in[B:] = xs
            t_in[:B] = t_cur
            t_in[B:] = t_cur
            dxdt = cfm.estimator.forward(x=x_in, mask=mask_in, mu=mu_in, t=t_in, spks=spks_in, cond=cond_in,
                                         r=None)
            d, c = torch.split(dxdt, [B, B], dim=0)
            d = (1.0 + rate) * d - rate * c
            xs.copy_(xs + (r_cur - t_cur) * d)

        pairs = list(itertools.pairwise(t_span))
        graph = None
        for k, (t, r) in enumerate(pairs):
            t_cur.copy_(t.unsqueeze(0))
            r_cur.copy_(r.unsqueeze(0))
            if graph is None and k >= 1 and self.error is None and x.device.type == "cuda":
                try:
                    g = torch.cuda.CUDAGraph()
                    with _sync_free_chunk_mask(), torch.cuda.graph(g):
                        step()
                    graph = g
                    self.graphed_calls += 1
                except RuntimeError as exc:
                    self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    torch.cuda.synchronize()
            if graph is not None:
                graph.replay()
            else:
                step()
        return xs.to(in_dtype)


class FastChatterbox:
    """Fast T3 + S3Gen (graph-stepped CFM) for one loaded upstream ``ChatterboxTTS``."""

    def __init__(self, model: Any, dtype: torch.dtype | None = None, max_len: int = 2048,
                 cuda_graph: bool | None = None, watermark: bool = True) -> None:
        self.model = model
        self.device = torch.device(model.device) if isinstance(model.device, str) else model.device
        self.t3 = FastT3(model.t3, dtype=dtype, max_len=max_len, cuda_graph=cuda_graph)
        cfm = model.s3gen.flow.decoder
        self.euler = GraphEuler(cfm)
        self._cfm = cfm
        self.use_graph = self.t3.cuda_graph if cuda_graph is None else bool(cuda_graph)
        self.watermarker = None
        if watermark:
            self.watermarker = model.watermarker
            net = getattr(self.watermarker, "perth_net", None)
            if net is not None and self.device.type == "cuda":
                net.to(self.device)

    # ------------------------------------------------------------------ pieces

    def text_tokens(self, text: str) -> torch.Tensor:
        from ttsbench.chatterbox.fast_equiv import text_tokens_for

        return text_tokens_for(self.model, text)

    def _prepare(self, exaggeration: float) -> None:
        """ChatterboxTTS.generate's exaggeration update of the T3 conditionals."""
        from chatterbox.models.t3.modules.cond_enc import T3Cond

        m = self.model
        if m.conds is None:
            raise RuntimeError("no voice conditionals: load a voice (conds.pt or prepare_conditionals) first")
        if exaggeration != m.conds.t3.emotion_adv[0, 0, 0]:
            c = m.conds.t3
            m.conds.t3 = T3Cond(speaker_emb=c.speaker_emb, cond_prompt_speech_tokens=c.cond_prompt_speech_tokens,
                                emotion_adv=exaggeration * torch.ones(1, 1, 1)).to(device=m.device)

    @torch.inference_mode()
    def vocode(self, speech_tokens: torch.Tensor) -> torch.Tensor:
        """Upstream ``S3Token2Wav.inference`` on valid tokens (1-D) → (1, samples) on the device."""
        s3 = self.model.s3gen
        if self.use_graph:  # the graph itself is only captured on CUDA; elsewhere the same step runs eagerly
            s3.flow.decoder.solve_euler = self.euler
        try:
            wav, _ = s3.inference(speech_tokens=speech_tokens.to(self.device), ref_dict=self.model.conds.gen)
        finally:
            s3.flow.decoder.__dict__.pop("solve_euler", None)
        return wav

    def _watermark(self, wav: Any) -> Any:
        if self.watermarker is None:
            return wav
        return self.watermarker.apply_watermark(wav, sample_rate=SR)

    @staticmethod
    def valid(tokens: torch.Tensor) -> torch.Tensor:
        """Upstream's ``drop_invalid_tokens`` + ``tokens < 6561`` on a 1-D token tensor."""
        return tokens[tokens < 6561]

    # ------------------------------------------------------------------ whole utterance

    @torch.inference_mode()
    def synthesize(self, text: str, params: SamplingParams, max_new_tokens: int = 1000,
                   exaggeration: float = 0.5, timings: StreamTimings | None = None) -> Any:
        """Float32 numpy waveform at 24 kHz (``ChatterboxTTS.generate`` semantics)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        self._prepare(exaggeration)
        t0 = time.perf_counter()
        tokens = self.t3.generate(self.model.conds.t3, self.text_tokens(text), max_new_tokens, params).view(-1)
        sync()
        t1 = time.perf_counter()
        wav = self.vocode(self.valid(tokens))
        out = wav.squeeze(0).detach().cpu().numpy()
        t2 = time.perf_counter()
        out = self._watermark(out)
        t3 = time.perf_counter()
        if timings is not None:
            timings.t3_tokens, timings.t3_s = len(tokens), t1 - t0
            timings.s3gen_s, timings.watermark_s = t2 - t1, t3 - t2
        return out

    # ------------------------------------------------------------------ streaming

    @torch.inference_mode()
    def stream(self, text: str, params: SamplingParams, max_new_tokens: int = 1000, exaggeration: float = 0.5,
               first_chunk_tokens: int = 20, chunk_tokens: int = 50, context_tokens: int = 8,
               crossfade_ms: float = 10.0, timings: StreamTimings | None = None) -> Iterator[Any]:
        """Float32 numpy chunks at 24 kHz, the first as soon as ``first_chunk_tokens`` are vocoded."""
        import numpy as np

        self._prepare(exaggeration)
        t_start = time.perf_counter()
        marks = [first_chunk_tokens]
        while marks[-1] + chunk_tokens < max_new_tokens:
            marks.append(marks[-1] + chunk_tokens)
        fade = int(SR * crossfade_ms / 1000.0)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32) if fade else None
        valid_all = torch.zeros(0, dtype=torch.long, device=self.device)
        done = 0  # valid tokens already vocoded
        tail: Any = None  # last `fade` samples of the previous chunk, held back for the crossfade
        tm = timings or StreamTimings()
        t_tok = time.perf_counter()
        for part in self.t3.iter_tokens(self.model.conds.t3, self.text_tokens(text), max_new_tokens, params,
                                        chunk_sizes=tuple(marks)):
            tm.t3_tokens += len(part)
            tm.t3_s += time.perf_counter() - t_tok
            valid_all = torch.cat([valid_all, self.valid(part)])
            if len(valid_all) == done:
                t_tok = time.perf_counter()
                continue
            t0 = time.perf_counter()
            ctx = min(context_tokens, done)
            wav = self.vocode(valid_all[done - ctx:]).squeeze(0).float().cpu().numpy()
            audio = wav[ctx * SAMPLES_PER_TOKEN:]
            if tail is not None and fade and len(audio) >= fade:
                audio = audio.copy()
                audio[:fade] = tail * (1.0 - ramp) + audio[:fade] * ramp
            t1 = time.perf_counter()
            tm.s3gen_s += t1 - t0
            done = len(valid_all)
            audio = self._watermark(audio)
            tm.watermark_s += time.perf_counter() - t1
            if fade and len(audio) > fade:
                tail, audio = audio[-fade:].copy(), audio[:-fade]
            else:
                tail = None
            if tm.first_chunk_s is None:
                tm.first_chunk_s = time.perf_counter() - t_start
            tm.chunks.append(len(audio))
            yield audio.astype(np.float32, copy=False)
            t_tok = time.perf_counter()
        if tail is not None:
            tm.chunks.append(len(tail))
            yield tail.astype(np.float32, copy=False)
