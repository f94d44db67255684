"""Equivalence checks of the fast Chatterbox path against upstream chatterbox 0.1.7 (tests + benchmark).

The upstream side always runs upstream's own ``T3.inference`` loop; to read its raw logits or to force its
tokens, ``torch.multinomial`` (as seen from ``chatterbox.models.t3.t3``) and the backend's ``forward`` are
wrapped for the duration of one call, nothing else is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ttsbench.chatterbox.fast_t3 import FastT3, SamplingParams


def text_tokens_for(model: Any, text: str) -> torch.Tensor:
    """(2, T) text tokens exactly as ``ChatterboxTTS.generate`` builds them for cfg_weight > 0."""
    import torch.nn.functional as F
    from chatterbox.tts import punc_norm

    tt = model.tokenizer.text_to_tokens(punc_norm(text)).to(model.device)
    tt = torch.cat([tt, tt], dim=0)
    tt = F.pad(tt, (1, 0), value=model.t3.hp.start_text_token)
    return F.pad(tt, (0, 1), value=model.t3.hp.stop_text_token)


@contextlib.contextmanager
def _upstream_hooks(forced: list[int] | None, greedy: bool, record: list[torch.Tensor] | None) -> Iterator[None]:
    from chatterbox.models.t3 import t3 as t3mod

    backend = t3mod.T3HuggingfaceBackend
    orig_fwd = backend.forward
    orig_multinomial = torch.multinomial

    def fwd(self: Any, *a: Any, **kw: Any) -> Any:
        out = orig_fwd(self, *a, **kw)
        if record is not None:
            record.append(out.logits[:, -1, :].detach().float().clone())
        return out

    def pick(probs: torch.Tensor, num_samples: int = 1, **kw: Any) -> torch.Tensor:
        if forced is not None:
            return torch.full((probs.shape[0], 1), forced.pop(0), dtype=torch.long, device=probs.device)
        if greedy:
            return probs.argmax(dim=-1, keepdim=True)
        return orig_multinomial(probs, num_samples, **kw)

    backend.forward = fwd
    torch.multinomial = pick
    try:
        yield
    finally:
        backend.forward = orig_fwd
        torch.multinomial = orig_multinomial


def upstream_logits(model: Any, text_tokens: torch.Tensor, tokens: list[int], cfg_weight: float) -> torch.Tensor:
    """Upstream's raw (2, V) logits after the prefix and after each forced token: (n+1, 2, V)."""
    rec: list[torch.Tensor] = []
    with _upstream_hooks([*list(tokens), 0], greedy=False, record=rec), torch.inference_mode():
        model.t3.inference(
            t3_cond=model.conds.t3,
            text_tokens=text_tokens,
            max_new_tokens=len(tokens),
            cfg_weight=cfg_weight,
            temperature=0.8,
            top_p=1.0,
            min_p=0.05,
            repetition_penalty=1.2,
        )
    return torch.stack(rec)


def upstream_tokens(model: Any, text_tokens: torch.Tensor, n: int, params: SamplingParams) -> torch.Tensor:
    """Upstream ``T3.inference`` tokens (1, n); greedy = argmax instead of multinomial."""
    with _upstream_hooks(None, greedy=params.greedy, record=None), torch.inference_mode():
        return model.t3.inference(
            t3_cond=model.conds.t3,
            text_tokens=text_tokens,
            max_new_tokens=n,
            cfg_weight=params.cfg_weight,
            temperature=params.temperature,
            top_p=params.top_p,
            min_p=params.min_p,
            repetition_penalty=params.repetition_penalty,
        )


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| per row (last dim), worst row."""
    a, b = a.double().flatten(0, -2), b.double().flatten(0, -2)
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-30)).max())


def logits_check(model: Any, fast: FastT3, text: str, tokens: list[int], cfg_weight: float = 0.3) -> dict:
    tt = text_tokens_for(model, text)
    up = upstream_logits(model, tt, tokens, cfg_weight)
    fa = fast.teacher_forced_logits(model.conds.t3, tt, torch.tensor(tokens), cfg_weight)
    n = min(len(up), len(fa))
    return {"steps": n, "rel_err": rel_err(fa[:n].cpu(), up[:n].cpu()), "dtype": str(fast.dtype)}


def greedy_check(model: Any, fast: FastT3, text: str, n: int, params: SamplingParams) -> dict:
    gp = SamplingParams(**{**params.__dict__, "greedy": True})
    tt = text_tokens_for(model, text)
    up = upstream_tokens(model, tt, n, gp).view(-1).cpu()
    fa = fast.generate(model.conds.t3, tt, n, gp).view(-1).cpu()
    m = min(len(up), len(fa))
    same = int((up[:m] == fa[:m]).sum())
    first_diff = next((i for i in range(m) if int(up[i]) != int(fa[i])), None)
    return {
        "steps": m,
        "same": same,
        "match": same / max(m, 1),
        "first_diff": first_diff,
        "len_upstream": len(up),
        "len_fast": len(fa),
    }
