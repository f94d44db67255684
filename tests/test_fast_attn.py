"""The fused decode attention of the fast T3 step (ttsbench.chatterbox.fast_attn) against its eager form.

Runs the Triton kernel in Triton's CPU interpreter (a child process started with TRITON_INTERPRET=1, as
tests/test_fast_gemv.py does), so it needs triton but no GPU; skipped where triton is not installed. Shapes are
the decode step's: the CFG pair of one request sharing one position (a stride-0 ``pos``), and a batch of rows
at different positions (BatchT3), q/k/v as strided views of one fused qkv tensor like ``FastT3``'s layer piece.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _triton_interp import require_triton, run_interpreted

require_triton()

pytestmark = pytest.mark.chatterbox

CHILD = r"""
import json, torch
from ttsbench.chatterbox import fast_attn

op, why = fast_attn.load()
assert op is not None, why
out = {}
H, D, L = 3, 64, 200
for name, dtype, pos in [
    ("pair_fp32", torch.float32, torch.tensor([70]).expand(2)),
    ("batch_fp32", torch.float32, torch.tensor([0, 0, 5, 5, 64, 64, 199, 199])),
    ("batch_bf16", torch.bfloat16, torch.tensor([1, 1, 130, 130])),
]:
    g = torch.Generator().manual_seed(len(name))
    R = pos.shape[0]
    qkv = torch.randn(R, 1, 3 * H * D, generator=g).to(dtype).view(R, 1, 3, H, D).transpose(1, 3)
    q, k, v = (qkv[:, :, i] * 1.0 if i == 0 else qkv[:, :, i] for i in range(3))  # q: a new tensor; k, v: views
    cache = [torch.randn(R + 1, H, L, D, generator=g).to(dtype) for _ in range(2)]  # one spare row untouched
    kc, vc = (c.clone() for c in cache)
    ke, ve = (c.clone() for c in cache)
    got = op(q, k, v, kc, vc, pos, L)
    ref = fast_attn.eager(q, k, v, ke, ve, pos, L)
    err = float((got.double() - ref.double()).norm() / ref.double().norm())
    out[name] = {
        "shape": list(got.shape),
        "dtype": str(got.dtype),
        "err": err,
        "cache_equal": bool(torch.equal(kc, ke) and torch.equal(vc, ve)),
        "cache_written": bool(not torch.equal(kc, cache[0])),
        "k_strided": not k.is_contiguous(),
    }
# the kernel must attend to the slots before pos: a changed earlier slot changes the output
pos = torch.tensor([40, 40])
q, k, v = (torch.randn(2, H, 1, D) for _ in range(3))
kc, vc = torch.randn(2, H, L, D), torch.randn(2, H, L, D)
a = op(q, k, v, kc.clone(), vc.clone(), pos, 128)
vc2 = vc.clone(); vc2[:, :, 0] += 5.0
b = op(q, k, v, kc.clone(), vc2, pos, 128)
vc3 = vc.clone(); vc3[:, :, 41:] += 5.0
c = op(q, k, v, kc.clone(), vc3, pos, 128)
out["earlier_slot_counts"] = float((a - b).abs().max())
out["later_slots_ignored"] = float((a - c).abs().max())
print(json.dumps(out))
"""


# The kernel inside the decoders: FastT3 (one request, the CFG pair at one position) and BatchT3 (two requests
# at different positions) on chatterbox's random-init T3, fused against eager. The interpreter runs every
# program in Python, so the model keeps 2 of its 30 layers (the same per-layer code runs for each).
MODEL_CHILD = r"""
import json, sys, torch
from chatterbox.tts import ChatterboxTTS
from ttsbench.chatterbox.fast_batch import BatchT3
from ttsbench.chatterbox.fast_equiv import text_tokens_for
from ttsbench.chatterbox.fast_t3 import FastT3, SamplingParams

model = ChatterboxTTS.from_local(sys.argv[1], "cpu")
t3 = model.t3
t3.tfmr.layers = t3.tfmr.layers[:2]
t3.cfg.num_hidden_layers = 2
fused, eager = FastT3(t3, max_len=256, attn=True), FastT3(t3, max_len=256, attn=False)
texts = ["Sure, I can help.", "Okay."]
tt = [text_tokens_for(model, t) for t in texts]
forced = torch.tensor([5, 100, 6000, 7])
a = fused.teacher_forced_logits(model.conds.t3, tt[0], forced, 0.3)
b = eager.teacher_forced_logits(model.conds.t3, tt[0], forced, 0.3)
g = SamplingParams(temperature=0.6, cfg_weight=0.3, greedy=True)
alone = [fused.generate(model.conds.t3, t, 4, g).view(-1).tolist() for t in tt]
batch = BatchT3(fused, slots=2, prefill_graphs=True)  # its padded prefill (run eagerly here)
Ls = [batch.admit(s, model.conds.t3, t, g) for s, t in enumerate(tt)]
for i in range(4):
    batch.step(2, max(Ls) + i)
print(json.dumps({
    "fused": [fused.fused_attn, fused.attn_error], "eager_fused": eager.fused_attn,
    "steps": a.shape[0], "rel_err": float((a - b).norm() / b.norm()),
    "prefix_lengths": Ls, "alone": alone, "batched": batch.out[:, :4].tolist(),
}))
"""


@pytest.fixture(scope="module")
def result() -> dict:
    return run_interpreted(CHILD)


@pytest.fixture(scope="module")
def decoders() -> dict:
    pytest.importorskip("chatterbox")
    from ttsbench.chatterbox import checkpoint

    d = Path(os.environ.get("TTSBENCH_TEST_CHECKPOINT", Path.home() / ".cache/ttsbench/test-checkpoint"))
    path, _ = checkpoint.make_random_checkpoint(d, seed=0)
    return run_interpreted(MODEL_CHILD, str(path))


@pytest.mark.parametrize(("name", "tol"), [("pair_fp32", 1e-6), ("batch_fp32", 1e-6), ("batch_bf16", 2e-2)])
def test_fused_attention_matches_eager(result: dict, name: str, tol: float) -> None:
    r = result[name]
    assert r["k_strided"]  # the views FastT3 passes, not copies
    assert r["err"] < tol, r
    assert r["cache_written"] and r["cache_equal"], r  # same slots written, nothing else touched


def test_fused_attention_reads_slots_up_to_pos_only(result: dict) -> None:
    assert result["earlier_slot_counts"] > 1e-3
    assert result["later_slots_ignored"] == 0.0


def test_decoders_take_the_kernel_and_keep_their_logits(decoders: dict) -> None:
    assert decoders["fused"] == [True, None] and decoders["eager_fused"] is False
    assert decoders["steps"] == 5  # after the prefix + after each of 4 forced tokens
    assert decoders["rel_err"] < 1e-5, decoders


def test_batched_rows_at_different_positions_decode_as_alone(decoders: dict) -> None:
    assert decoders["prefix_lengths"][0] != decoders["prefix_lengths"][1]  # two positions in one step
    assert decoders["batched"] == decoders["alone"], decoders
