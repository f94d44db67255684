"""ttsbench.chatterbox.loading: random init skipped while a checkpoint loads, never a NaN left behind.
Tiny torch modules here (main pass); the chatterbox pass compares a real from_local load with upstream's
(tests/test_chatterbox_runner.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from ttsbench.chatterbox.loading import load_model, load_skipping_random_init, random_init_as_nan  # noqa: E402


def _checkpoint() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        k: v.clone()
        for k, v in torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Embedding(5, 2)).state_dict().items()
    }


def _loader(state: dict[str, torch.Tensor], calls: list[int]):
    def load() -> SimpleNamespace:
        calls.append(1)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Embedding(5, 2))
        net.load_state_dict(state, strict=False)  # strict=False as chatterbox loads s3gen
        return SimpleNamespace(net=net, name="not a module")

    return load


def test_a_complete_checkpoint_loads_once_and_equals_the_upstream_load() -> None:
    state, calls = _checkpoint(), []
    model, missing = load_skipping_random_init(_loader(state, calls))
    assert missing == [] and calls == [1]
    upstream = _loader(state, [])()
    for name, value in upstream.net.state_dict().items():
        assert torch.equal(model.net.state_dict()[name], value), name


def test_parameters_the_checkpoint_lacks_are_named_and_loaded_the_upstream_way(capsys: pytest.CaptureFixture) -> None:
    state = {k: v for k, v in _checkpoint().items() if k != "1.weight"}  # the embedding is missing
    calls: list[int] = []
    model, missing = load_skipping_random_init(_loader(state, calls))
    assert missing == ["net.1.weight"] and calls == [1, 1]
    assert not any(torch.isnan(p).any() for p in model.net.parameters())
    assert torch.equal(model.net[0].weight, state["0.weight"])
    load_model(_loader(state, []))
    assert "lacks 1 parameters (net.1.weight)" in capsys.readouterr().err


def test_the_random_draws_come_back_after_loading_even_when_it_fails() -> None:
    originals = (torch.Tensor.uniform_, torch.Tensor.normal_)
    with pytest.raises(RuntimeError), random_init_as_nan():
        assert math.isnan(float(torch.empty(1).uniform_()))
        assert math.isnan(float(torch.empty(1).normal_(0.0, 1.0)))
        raise RuntimeError("load failed")
    assert (torch.Tensor.uniform_, torch.Tensor.normal_) == originals
    x = torch.empty(1000).uniform_(0.25, 0.5)
    assert float(x.min()) >= 0.25 and float(x.max()) <= 0.5
