"""The Triton GEMV of the fast T3 decode step (ttsbench.chatterbox.fast_gemv) vs F.linear.

Runs the kernel in Triton's CPU interpreter, so it needs triton but no GPU; skipped where triton is not
installed. The interpreter is chosen when triton is imported, so the kernel runs in a child process started
with TRITON_INTERPRET=1. The GPU run (timings, whole-model equivalence) is benchmarks/chatterbox_fast_path.py.
"""

from __future__ import annotations

import pytest

from _triton_interp import require_triton, run_interpreted

require_triton()

pytestmark = pytest.mark.chatterbox

CHILD = r"""
import json, torch
import torch.nn.functional as F
from ttsbench.chatterbox import fast_gemv

op, why = fast_gemv.load()
assert op is not None, why
out = {}
for n, k, rows in [(96, 64, 2), (100, 200, 2), (1030, 256, 1), (8, 1024, 2)]:
    g = torch.Generator().manual_seed(n + k)
    w, x = torch.randn(n, k, generator=g), torch.randn(rows, 1, k, generator=g)
    y = op(x, w)
    ref = F.linear(x.double(), w.double())
    out[f"{n}x{k}x{rows}"] = [list(y.shape), str(y.dtype), float((y.double() - ref).norm() / ref.norm())]
x = torch.randn(2, 1, 64)[..., ::2]  # strided last dim: the op copies the rows before the kernel
w = torch.randn(48, 32)
out["strided"] = [x.is_contiguous(), float((op(x, w) - F.linear(x, w)).abs().max())]
calls = []
lin = fast_gemv.make_linear(lambda a, b: calls.append(1) or op(a, b))
w, b, x = torch.randn(16, 8), torch.randn(16), torch.randn(2, 1, 8)
out["routing"] = [float((lin(x, w, b) - F.linear(x, w, b)).abs().max()), len(calls)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def result() -> dict:
    return run_interpreted(CHILD, timeout=300)


@pytest.mark.parametrize(("n", "k", "rows"), [(96, 64, 2), (100, 200, 2), (1030, 256, 1), (8, 1024, 2)])
def test_gemv_matches_linear_fp32(result: dict, n: int, k: int, rows: int) -> None:
    shape, dtype, err = result[f"{n}x{k}x{rows}"]
    assert shape == [rows, 1, n] and dtype == "torch.float32"
    assert err < 1e-6


def test_gemv_takes_a_strided_input(result: dict) -> None:
    contiguous, max_abs = result["strided"]
    assert not contiguous and max_abs < 1e-4


def test_make_linear_keeps_cpu_inputs_on_f_linear(result: dict) -> None:
    max_abs, kernel_calls = result["routing"]
    assert max_abs < 1e-6 and kernel_calls == 0  # only ≤ 2-row CUDA inputs take the kernel
