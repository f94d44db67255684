"""Load a Chatterbox model without drawing random weights that the checkpoint overwrites anyway.

``ChatterboxTTS.from_local`` builds T3 (a 0.5B Llama), S3Gen and the voice encoder with their default random
initialisation and only then loads the checkpoint over them. Drawing those random numbers is most of the load
time on a CPU (measured on a 2-core box with chatterbox-tts 0.1.7: 10.3 of 12.4 s in ``uniform_``/``normal_``)
and on a GB10's Grace cores it delays every server start, including the standby's in a failover.

While loading, ``Tensor.uniform_`` and ``Tensor.normal_`` (what ``torch.nn.init`` and transformers' init
helpers end in) fill NaN instead. Every parameter the checkpoint provides is overwritten; one it does not
provide stays NaN, and then the model is loaded again the upstream way, so the result never differs from
upstream's except in which random numbers the process drew.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

M = TypeVar("M")


@contextmanager
def random_init_as_nan() -> Iterator[None]:
    """Inside: floating-point ``uniform_``/``normal_`` fill NaN (cheap) instead of drawing random numbers."""
    originals = {name: getattr(torch.Tensor, name) for name in ("uniform_", "normal_")}

    def poisoned(name: str) -> Callable[..., torch.Tensor]:
        original = originals[name]

        def fill(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self.is_floating_point():
                with torch.no_grad():
                    return self.fill_(math.nan)
            return original(self, *args, **kwargs)

        return fill

    try:
        for name in originals:
            setattr(torch.Tensor, name, poisoned(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def unloaded_parameters(model: Any) -> list[str]:
    """Names of floating-point parameters still holding NaN in the model's torch modules (t3, s3gen, ve)."""
    modules = [(k, v) for k, v in vars(model).items() if isinstance(v, torch.nn.Module)]
    with torch.no_grad():
        return [
            f"{key}.{name}"
            for key, module in modules
            for name, param in module.named_parameters()
            if param.is_floating_point() and bool(torch.isnan(param).any())
        ]


def load_skipping_random_init(load: Callable[[], M]) -> tuple[M, list[str]]:
    """``load()`` with random init skipped; (model, parameters the checkpoint lacked). When it lacked any, the
    model comes from a second, upstream ``load()`` (those parameters keep upstream's random init)."""
    with random_init_as_nan():
        model = load()
    missing = unloaded_parameters(model)
    if missing:
        del model
        model = load()
    return model, missing


def load_model(load: Callable[[], M]) -> M:
    """:func:`load_skipping_random_init`, saying on stderr when the checkpoint lacked parameters."""
    model, missing = load_skipping_random_init(load)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        print(
            f"ttsbench: the checkpoint lacks {len(missing)} parameters ({shown}); loaded again with chatterbox's "
            "own random init for them, as upstream does",
            file=sys.stderr,
        )
    return model
