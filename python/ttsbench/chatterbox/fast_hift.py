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

Opt-in (``serve-chatterbox --hift-sync-free on``, ``FastChatterbox(hift_sync_free=True)``) until its effect is
measured on a GPU: ``benchmarks/chatterbox_http.py --hift`` checks the equality there (max_abs) and
``--ab 'syncfree=--hift-sync-free on'`` measures it over HTTP.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def sine_forward(gen: Any, f0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``SineGen.forward`` of chatterbox 0.1.7 with device-side allocation (see the module docstring)."""
    from torch.distributions.uniform import Uniform

    harmonics = gen.harmonic_num + 1
    f_mat = torch.zeros((f0.size(0), harmonics, f0.size(-1)), device=f0.device)
    for i in range(harmonics):
        f_mat[:, i : i + 1, :] = f0 * (i + 1) / gen.sampling_rate
    theta = 2 * np.pi * (torch.cumsum(f_mat, dim=-1) % 1)
    phase = Uniform(low=-np.pi, high=np.pi).sample(sample_shape=(f0.size(0), harmonics, 1))  # CPU generator
    cuda = f0.device.type == "cuda"
    phase = (phase.pin_memory() if cuda else phase).to(f0.device, non_blocking=cuda)
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
