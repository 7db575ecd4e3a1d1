"""Model contracts: shapes, gradients, determinism, and that padding never leaks."""

from __future__ import annotations

import pytest
import torch

from odds_pipeline.training.models import (
    DualStreamArbTransformer,
    MaskedLSTM,
    alibi_bias,
    alibi_slopes,
)

F_BOOK, F_LSTM = 5, 6
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: intra-op threads only add contention on a shared 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _transformer(seed: int = 0) -> DualStreamArbTransformer:
    torch.manual_seed(seed)
    return DualStreamArbTransformer(
        F_BOOK, d_model=16, n_heads=4, n_layers=2, cross_from_layer=1, mlp_hidden=16
    ).eval()


def _lstm(seed: int = 0) -> MaskedLSTM:
    torch.manual_seed(seed)
    return MaskedLSTM(F_LSTM, hidden=16, num_layers=2, dropout=0.2).eval()


def _mask(lengths: list[int], t: int, holes: bool = True) -> torch.Tensor:
    """Real steps up to each length, with a few missing steps inside (pre-match gaps)."""
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    if holes:
        for i, n in enumerate(lengths):
            if n >= 4:
                mask[i, 1] = False
                mask[i, n - 3] = False
    return mask


def _run_transformer(model, xa, xb, mask, mt):
    with torch.no_grad():
        return model(xa, xb, mask, mt)


def _run_lstm(model, x, mask):
    with torch.no_grad():
        return model(x, mask)


def test_alibi_slopes_follow_the_paper() -> None:
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert torch.allclose(alibi_slopes(4), torch.tensor([0.25, 0.0625, 0.015625, 0.00390625]))
    # non power of two: the 4-head slopes, then every other 8-head slope
    assert torch.allclose(alibi_slopes(6)[4:], torch.tensor([0.5, 0.125]))
    bias = alibi_bias(alibi_slopes(2), 4)
    assert bias.shape == (2, 4, 4)
    assert bias[0, 0, 3] == pytest.approx(-3 * 2.0**-4)
    assert torch.equal(bias, bias.transpose(1, 2))


def test_output_shapes_and_gradients() -> None:
    b, t = 5, 9
    mask = _mask([9, 7, 4, 1, 0], t)
    xa, xb = torch.randn(b, t, F_BOOK), torch.randn(b, t, F_BOOK)
    mt = torch.tensor([0, 1, 2, 0, 1])
    transformer = _transformer().train()
    out = transformer(xa, xb, mask, mt)
    assert out.shape == (b,)
    torch.nn.functional.binary_cross_entropy_with_logits(out, torch.ones(b)).backward()
    grads = {n: p.grad for n, p in transformer.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["proj_a.weight"].abs().sum() > 0 and grads["proj_b.weight"].abs().sum() > 0
    assert grads["layers.1.cross_attn.0.kv.weight"].abs().sum() > 0
    assert "layers.0.cross_attn.0.kv.weight" not in grads  # cross-attention from layer 1

    lstm = _lstm().train()
    x = torch.randn(b, t, F_LSTM)
    out = lstm(x, mask)
    assert out.shape == (b,)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lstm.parameters())
    assert lstm.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_transformer_padding_invariance() -> None:
    model = _transformer()
    torch.manual_seed(1)
    lengths, t = [12, 7, 3, 1], 12
    xa, xb = torch.randn(4, t, F_BOOK), torch.randn(4, t, F_BOOK)
    mask, mt = _mask(lengths, t), torch.tensor([0, 1, 2, 1])
    batched = _run_transformer(model, xa, xb, mask, mt)
    for i, n in enumerate(lengths):
        alone = _run_transformer(
            model, xa[i : i + 1, :n], xb[i : i + 1, :n], mask[i : i + 1, :n], mt[i : i + 1]
        )
        assert torch.allclose(alone, batched[i : i + 1], atol=TOL), (i, alone, batched[i])
    # extra trailing padded steps on the whole batch
    pad = torch.zeros(4, 5, F_BOOK)
    padded = _run_transformer(
        model,
        torch.cat([xa, pad], 1),
        torch.cat([xb, pad], 1),
        torch.cat([mask, torch.zeros(4, 5, dtype=torch.bool)], 1),
        mt,
    )
    assert torch.allclose(padded, batched, atol=TOL)


def test_lstm_padding_invariance() -> None:
    model = _lstm()
    torch.manual_seed(1)
    lengths, t = [24, 10, 4, 1], 24
    x, mask = torch.randn(4, t, F_LSTM), _mask(lengths, t)
    batched = _run_lstm(model, x, mask)
    for i, n in enumerate(lengths):
        alone = _run_lstm(model, x[i : i + 1, :n], mask[i : i + 1, :n])
        assert torch.allclose(alone, batched[i : i + 1], atol=TOL), (i, alone, batched[i])
    padded = _run_lstm(
        model,
        torch.cat([x, torch.randn(4, 6, F_LSTM)], 1),
        torch.cat([mask, torch.zeros(4, 6, dtype=torch.bool)], 1),
    )
    assert torch.allclose(padded, batched, atol=TOL)


@pytest.mark.parametrize("garbage", [1e6, float("nan"), float("inf")])
def test_garbage_in_masked_steps_is_ignored(garbage: float) -> None:
    torch.manual_seed(2)
    t = 10
    mask = _mask([10, 6, 2], t)  # masked steps inside and after the real ones
    xa, xb, x = torch.randn(3, t, F_BOOK), torch.randn(3, t, F_BOOK), torch.randn(3, t, F_LSTM)
    mt = torch.tensor([0, 1, 2])
    transformer, lstm = _transformer(), _lstm()
    clean_t = _run_transformer(transformer, xa, xb, mask, mt)
    clean_l = _run_lstm(lstm, x, mask)
    dirty = ~mask.unsqueeze(-1)
    out_t = _run_transformer(
        transformer, xa.masked_fill(dirty, garbage), xb.masked_fill(dirty, garbage), mask, mt
    )
    out_l = _run_lstm(lstm, x.masked_fill(dirty, garbage), mask)
    assert torch.equal(out_t, clean_t)
    assert torch.equal(out_l, clean_l)


def test_masked_steps_inside_the_window_matter_for_the_lstm() -> None:
    """A missing step is not the same as a zero-valued observed step (mask is an input)."""
    model = _lstm()
    torch.manual_seed(3)
    x = torch.randn(1, 8, F_LSTM)
    x[0, 3] = 0.0
    full = torch.ones(1, 8, dtype=torch.bool)
    holed = full.clone()
    holed[0, 3] = False
    assert not torch.allclose(_run_lstm(model, x, full), _run_lstm(model, x, holed))


def test_all_masked_sample_gives_finite_output_and_gradients() -> None:
    t = 6
    mask = torch.zeros(2, t, dtype=torch.bool)
    mask[1, :3] = True
    xa = torch.full((2, t, F_BOOK), float("nan"))
    xa[1] = torch.randn(t, F_BOOK)
    xb, x = xa.clone(), torch.full((2, t, F_LSTM), float("nan"))
    x[1] = torch.randn(t, F_LSTM)
    transformer, lstm = _transformer().train(), _lstm().train()
    out_t = transformer(xa, xb, mask, torch.tensor([0, 2]))
    out_l = lstm(x, mask)
    assert torch.isfinite(out_t).all() and torch.isfinite(out_l).all()
    (out_t.sum() + out_l.sum()).backward()
    for model in (transformer, lstm):
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # alone, too (a batch of one empty sample)
    with torch.no_grad():
        assert torch.isfinite(transformer.eval()(xa[:1], xb[:1], mask[:1], torch.tensor([1]))).all()
        assert torch.isfinite(lstm.eval()(x[:1], mask[:1])).all()


def test_same_seed_same_model_and_outputs() -> None:
    torch.manual_seed(4)
    mask = _mask([8, 5], 8)
    xa, xb, x = torch.randn(2, 8, F_BOOK), torch.randn(2, 8, F_BOOK), torch.randn(2, 8, F_LSTM)
    mt = torch.tensor([1, 0])
    a, b = _transformer(seed=11), _transformer(seed=11)
    assert torch.equal(_run_transformer(a, xa, xb, mask, mt), _run_transformer(b, xa, xb, mask, mt))
    assert not torch.equal(
        _run_transformer(_transformer(seed=12), xa, xb, mask, mt),
        _run_transformer(a, xa, xb, mask, mt),
    )
    assert torch.equal(_run_lstm(_lstm(11), x, mask), _run_lstm(_lstm(11), x, mask))
    # dropout in train mode is reproducible under the same seed as well
    lstm = _lstm(11).train()
    torch.manual_seed(5)
    first = lstm(x, mask)
    torch.manual_seed(5)
    assert torch.equal(first, lstm(x, mask))


def test_cross_attention_connects_the_streams() -> None:
    """With cross-attention, book B's prices change the pooled view of A and the output."""
    torch.manual_seed(6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    xa, xb = torch.randn(1, 6, F_BOOK), torch.randn(1, 6, F_BOOK)
    mt = torch.tensor([0])
    model = _transformer()
    assert not torch.allclose(
        _run_transformer(model, xa, xb, mask, mt), _run_transformer(model, xa, xb + 1.0, mask, mt)
    )
    with pytest.raises(ValueError):
        DualStreamArbTransformer(F_BOOK, n_layers=2, cross_from_layer=3)
    no_cross = DualStreamArbTransformer(F_BOOK, d_model=16, n_layers=2, cross_from_layer=2)
    assert not any("cross_attn" in n for n, _ in no_cross.named_parameters())
