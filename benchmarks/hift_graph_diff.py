"""Probe: where HiFT replayed from a CUDA graph (``fast_hift.GraphedHift``) stops being bit-equal to eager HiFT.

On the H200 (2026-12-07, ``chatterbox-http-h200-hift.json``) ``--hift graph`` matched upstream at n12 b1 and n58 b4
but not at n58 b1 (max 6.05e-5, the same in two processes), so it stays opt-in. This probe finds the first
HiFT module whose output differs between an eager call and a graph replay of the same call (same mel, same phase,
same CUDA generator seed), under a few settings that could explain it:

* ``eager_vs_eager`` — control: two eager calls (is eager itself deterministic?);
* ``graph`` — eager on the default stream vs a replay (what the server compares);
* ``graph_vs_side_stream`` — eager on a non-default stream vs a replay (the capture runs on a side stream:
  cuBLAS/cuDNN workspaces are per stream);
* ``cudnn_deterministic`` — the same with ``cudnn.deterministic = True, cudnn.benchmark = False``;
* ``cudnn_no_tf32`` — the same with ``cudnn.allow_tf32 = False``;
* ``cudnn_off`` — the same with cuDNN disabled (native convolutions).

Every module's output is recorded by a forward hook (a clone; inside the capture the clone is part of the graph,
so after the replay it holds the replay's value). Graphs are kept until the process ends (destroying one frees
the cuBLAS workspace other graphs captured on the same stream use: pytorch/pytorch#193402).

Device run (wheels in ``.whl/``, see tools/device-wheels)::

    PYTHONPATH=/tmp/site:python python benchmarks/hift_graph_diff.py --checkpoint /tmp/ckpt --out $OUT/hift-diff.json

On the CPU only the control runs (a smoke run of this code).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "benchmarks"))


@contextlib.contextmanager
def recording(model: torch.nn.Module, rows: list[tuple[str, str, torch.Tensor]]) -> Iterator[None]:
    """Append ``(name, type, output clone)`` for every module call under ``model`` while inside."""

    def hook(name: str) -> Callable[..., None]:
        def fn(mod: torch.nn.Module, _inp: Any, out: Any) -> None:
            t = out[0] if isinstance(out, tuple) and out and torch.is_tensor(out[0]) else out
            if torch.is_tensor(t):
                rows.append((name, type(mod).__name__, t.detach().clone()))

        return fn

    handles = [m.register_forward_hook(hook(n or "<root>")) for n, m in model.named_modules()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def compare(a: list[tuple[str, str, torch.Tensor]], b: list[tuple[str, str, torch.Tensor]]) -> dict[str, Any]:
    """Module outputs of two runs, in call order: how many differ, the first few that do (name, type, max_abs)."""
    if [(n, t) for n, t, _ in a] != [(n, t) for n, t, _ in b]:
        return {"error": "the two runs called different modules", "calls": [len(a), len(b)]}
    diffs = []
    for (name, typ, x), (_, _, y) in zip(a, b, strict=True):
        if x.shape != y.shape:
            diffs.append({"module": name, "type": typ, "error": f"shape {tuple(x.shape)} vs {tuple(y.shape)}"})
            continue
        d = float((x.float() - y.float()).abs().max()) if x.numel() else 0.0
        if d != 0.0:
            diffs.append({"module": name, "type": typ, "max_abs": d, "shape": list(x.shape)})
    return {"calls": len(a), "differing": len(diffs), "first": diffs[:8]}


def _settings(name: str) -> contextlib.AbstractContextManager:
    flags = {
        "cudnn_deterministic": {"deterministic": True, "benchmark": False},
        "cudnn_no_tf32": {"allow_tf32": False},
        "cudnn_off": {"enabled": False},
    }.get(name)
    return torch.backends.cudnn.flags(**flags) if flags else contextlib.nullcontext()


def probe(ckpt: str, variants: list[str]) -> dict[str, Any]:
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox import fast_hift

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    model = ChatterboxTTS.from_local(ckpt, dev.type)
    s3 = model.s3gen
    hift = s3.mel2wav
    graphed = fast_hift.GraphedHift(hift, dev)  # sync-free installed in place
    g = torch.Generator().manual_seed(0)
    shapes = {"n12_b1": (1, 12), "n58_b1": (1, 58), "n58_b4": (4, 58)}
    mels = {}
    with torch.inference_mode():
        for k, shp in shapes.items():
            toks = torch.randint(0, 6561, shp, generator=g).to(dev)
            mels[k] = s3.flow_inference(toks, ref_dict=model.conds.gen, finalize=True).to(s3.dtype).clone()
    keep: list[Any] = []  # graphs live to the end (see the docstring)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "variants": {}}

    def run_eager(mel: torch.Tensor, phase: torch.Tensor, stream: Any = None) -> tuple[list, torch.Tensor]:
        rows: list = []
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx, recording(hift, rows):
            if cuda:
                torch.cuda.manual_seed(1234)
            torch.manual_seed(1234)
            m, p, _ = graphed._front(mel.clone(), phase.clone())
            wav = type(hift)._istft(hift, m, p)
        if stream is not None:
            torch.cuda.current_stream().wait_stream(stream)
        return rows, wav

    def run_graph(mel: torch.Tensor, phase: torch.Tensor) -> tuple[list, torch.Tensor]:
        rows: list = []
        static_mel, static_phase = mel.clone(), phase.clone()
        gr = torch.cuda.CUDAGraph()
        with torch.inference_mode():
            graphed._front(static_mel.clone(), static_phase.clone())  # warm-up
            torch.cuda.synchronize()
            with recording(hift, rows), torch.cuda.graph(gr):
                m, p, _ = graphed._front(static_mel, static_phase)
            keep.append((gr, rows, m, p))
            torch.cuda.manual_seed(1234)
            static_phase.copy_(phase)
            gr.replay()
            wav = type(hift)._istft(hift, m, p)
        torch.cuda.synchronize()
        return rows, wav

    for variant in variants:
        if variant != "eager_vs_eager" and not cuda:
            continue
        res: dict[str, Any] = {}
        out["variants"][variant] = res
        with _settings(variant):
            for k, mel in mels.items():
                phase = fast_hift.to_device(fast_hift.draw_phase(graphed.gen, mel.size(0)), dev)
                a, wav_a = run_eager(mel, phase)
                if variant == "eager_vs_eager":
                    b, wav_b = run_eager(mel, phase)
                elif variant == "graph_vs_side_stream":
                    side = torch.cuda.Stream()
                    a, wav_a = run_eager(mel, phase, side)
                    b, wav_b = run_graph(mel, phase)
                else:
                    b, wav_b = run_graph(mel, phase)
                res[k] = {"wav_max_abs": float((wav_a - wav_b).abs().max()), **compare(a, b)}
                print(
                    f"{variant:22s} {k:7s} wav max_abs {res[k]['wav_max_abs']:.3g}  differing modules "
                    f"{res[k].get('differing')}/{res[k].get('calls')}  first {res[k].get('first', [])[:1]}",
                    flush=True,
                )
    return out


VARIANTS = ["eager_vs_eager", "graph", "graph_vs_side_stream", "cudnn_deterministic", "cudnn_no_tf32", "cudnn_off"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="random-init checkpoint dir (built there if missing)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    from chatterbox_http import machine

    from ttsbench.atomic import write_json_atomic
    from ttsbench.chatterbox import checkpoint

    path, _ = checkpoint.make_random_checkpoint(Path(args.checkpoint), seed=0)
    doc = {"machine": machine(), "weights": "random-init", **probe(str(path), args.variants.split(","))}
    write_json_atomic(Path(args.out), doc)
    print(json.dumps({k: v for k, v in doc.items() if k != "variants"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
