"""Plain torch modules for the two learned models; both return logits (BCE-with-logits loss).

Padding contract shared by both models: ``mask`` [B, T] is True on real steps. Padded or
missing steps never reach attention keys, pooling or the recurrence, their input values
are replaced by zeros before anything reads them (garbage or NaN there is harmless), and a
sample with no real step at all gets a finite logit (its sequence summary is zeroed).

This module imports torch at import time: only the Dagster layer's functions import it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = [
    "DualStreamArbTransformer",
    "MarketResidualLSTM",
    "MaskedLSTM",
    "alibi_slopes",
    "alibi_bias",
    "count_parameters",
]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, for metadata and benchmark reports."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def alibi_slopes(n_heads: int) -> Tensor:
    """Per-head ALiBi slopes, the geometric sequence of Press et al. (2022).

    For a power of two n the slopes are 2^(-8/n), 2^(-16/n), ...; otherwise the paper takes
    the slopes of the closest lower power of two and fills up with every other slope of
    the next power of two.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")
    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: Tensor, length: int) -> Tensor:
    """Symmetric ALiBi bias [H, T, T] = -slope_h * |i - j|.

    Relative distances only: adding trailing padding to a batch leaves every real
    position's bias unchanged, which the padding-invariance tests rely on.
    """
    pos = torch.arange(length, device=slopes.device, dtype=slopes.dtype)
    dist = (pos[:, None] - pos[None, :]).abs()
    return -slopes[:, None, None] * dist[None]


def _safe_key_mask(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(key mask, has_any): a row with no real step attends to all its (zeroed) steps.

    Softmax over keys that are all -inf is NaN; letting an empty row see its own zeros
    keeps everything finite, and its summary is zeroed afterwards via ``has_any``.
    """
    has_any = mask.any(dim=1)
    return mask | ~has_any[:, None], has_any


class _Attention(nn.Module):
    """Multi-head attention whose additive bias carries both ALiBi and the key mask."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor, context: Tensor, bias: Tensor) -> Tensor:
        """x [B, T, D] queries, context [B, S, D] keys/values, bias [B, H, T, S] additive."""
        b, t, d = x.shape
        s = context.shape[1]
        h, dh = self.n_heads, d // self.n_heads
        q = self.q(x).view(b, t, h, dh).transpose(1, 2)
        k, v = self.kv(context).view(b, s, 2, h, dh).unbind(dim=2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(o.transpose(1, 2).reshape(b, t, d))


class _FeedForward(nn.Sequential):
    def __init__(self, d_model: int, dropout: float, mult: int = 4) -> None:
        super().__init__(
            nn.Linear(d_model, mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
        )


class _DualStreamLayer(nn.Module):
    """Pre-norm layer: self-attention per stream, optional cross-attention, feed-forward.

    Cross-attention updates both streams from the same pre-layer states (A reads B and
    B reads A simultaneously), so neither direction sees the other's update first.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        cross: bool,
        attn_dropout: float = 0.0,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        self.cross = cross
        self.norm_sa = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(2)])
        self.self_attn = nn.ModuleList(
            [_Attention(d_model, n_heads, attn_dropout) for _ in range(2)]
        )
        if cross:
            self.norm_ca = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(2)])
            self.cross_attn = nn.ModuleList(
                [_Attention(d_model, n_heads, attn_dropout) for _ in range(2)]
            )
        self.norm_ff = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(2)])
        self.ff = nn.ModuleList([_FeedForward(d_model, dropout, ff_mult) for _ in range(2)])
        self.drop = nn.Dropout(dropout)

    def forward(self, a: Tensor, b: Tensor, bias: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """keep [B, T, 1] zeroes padded steps after every sub-layer (no garbage builds up)."""
        streams = [a, b]
        for i in range(2):
            n = self.norm_sa[i](streams[i])
            streams[i] = (streams[i] + self.drop(self.self_attn[i](n, n, bias))) * keep
        if self.cross:
            na, nb = self.norm_ca[0](streams[0]), self.norm_ca[1](streams[1])
            streams = [
                (streams[0] + self.drop(self.cross_attn[0](na, nb, bias))) * keep,
                (streams[1] + self.drop(self.cross_attn[1](nb, na, bias))) * keep,
            ]
        for i in range(2):
            streams[i] = (streams[i] + self.drop(self.ff[i](self.norm_ff[i](streams[i])))) * keep
        return streams[0], streams[1]


class _AttentionPool(nn.Module):
    """Masked attention pooling with one learned query (zero init = masked mean at start)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.query = nn.Parameter(torch.zeros(d_model))
        self.scale = 1.0 / math.sqrt(d_model)

    def forward(self, h: Tensor, key_mask: Tensor) -> Tensor:
        h = self.norm(h)
        scores = (h @ self.query.to(h.dtype)).float() * self.scale
        scores = scores.masked_fill(~key_mask, float("-inf"))
        weights = torch.softmax(scores, dim=1).to(h.dtype)
        return (weights.unsqueeze(-1) * h).sum(dim=1)


class DualStreamArbTransformer(nn.Module):
    """Two time-aligned books' price streams -> one logit (e.g. an arbitrage window ahead).

    Per-book input projections, ``n_layers`` pre-norm layers of ALiBi self-attention per
    stream, cross-attention between the streams in layers ``>= cross_from_layer``
    (0-based; ``n_layers`` disables it), masked attention pooling of each stream, a
    market-type embedding and an MLP head. ``dropout`` applies to residual branches,
    feed-forward and head; ``attn_dropout`` (dropout on attention probabilities) defaults
    to 0 because on CPU it forces the unfused attention path and costs about half of a
    training step. ``ff_mult`` sets the feed-forward width (``ff_mult * d_model``), the
    bulk of the compute. Cross-attention uses the same ALiBi bias as
    self-attention: both streams share one time axis, so the bias tells step i of book A
    which step of book B is contemporaneous (the model has no other positional signal).

    Inputs: x_a, x_b [B, T, F] float; mask [B, T] bool (True = real step);
    market_type [B] long in [0, n_market_types). Output: logits [B].

    Optional static inputs (issue #10; off by default, so models saved before and every
    caller that passes four inputs are unchanged): with ``n_static > 0`` the head also
    reads ``static`` [B, n_static] (standardised explicit inputs a rule-maker would use:
    ``training.arbitrage_inputs``), and with ``n_books > 0`` each of the two books gets a
    ``book_dim`` embedding from ``books`` [B, 2] long in [0, n_books). Static values are read
    as given (standardise them first: ``arbitrage_inputs.standardise``). Both are concatenated
    with the pooled streams and the market embedding before the head; a model built with
    them refuses to run without them.
    """

    def __init__(
        self,
        n_features_per_book: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 3,
        cross_from_layer: int = 1,
        n_market_types: int = 3,
        dropout: float = 0.1,
        mlp_hidden: int = 64,
        attn_dropout: float = 0.0,
        ff_mult: int = 4,
        n_static: int = 0,
        n_books: int = 0,
        book_dim: int = 8,
    ) -> None:
        super().__init__()
        if n_static < 0 or n_books < 0 or book_dim < 1:
            raise ValueError("n_static and n_books must be >= 0, book_dim >= 1")
        if not 0 <= cross_from_layer <= n_layers:
            raise ValueError(f"cross_from_layer={cross_from_layer} not in [0, n_layers={n_layers}]")
        self.hparams = {
            "n_features_per_book": n_features_per_book,
            "d_model": d_model,
            "n_heads": n_heads,
            "n_layers": n_layers,
            "cross_from_layer": cross_from_layer,
            "n_market_types": n_market_types,
            "dropout": dropout,
            "mlp_hidden": mlp_hidden,
            "attn_dropout": attn_dropout,
            "ff_mult": ff_mult,
        }
        # only when used: the hyper-parameters of a default model stay those saved before
        if n_static or n_books:
            self.hparams.update(n_static=n_static, n_books=n_books, book_dim=book_dim)
        self.n_static = n_static
        self.n_books = n_books
        self.proj_a = nn.Linear(n_features_per_book, d_model)
        self.proj_b = nn.Linear(n_features_per_book, d_model)
        self.layers = nn.ModuleList(
            [
                _DualStreamLayer(
                    d_model,
                    n_heads,
                    dropout,
                    cross=i >= cross_from_layer,
                    attn_dropout=attn_dropout,
                    ff_mult=ff_mult,
                )
                for i in range(n_layers)
            ]
        )
        self.pool_a = _AttentionPool(d_model)
        self.pool_b = _AttentionPool(d_model)
        self.market_embedding = nn.Embedding(n_market_types, d_model)
        extra = n_static
        if n_books:
            self.book_embedding = nn.Embedding(n_books, book_dim)
            extra += 2 * book_dim
        self.head = nn.Sequential(
            nn.Linear(3 * d_model + extra, mlp_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_hidden, 1),
        )
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def forward(
        self,
        x_a: Tensor,
        x_b: Tensor,
        mask: Tensor,
        market_type: Tensor,
        static: Tensor | None = None,
        books: Tensor | None = None,
    ) -> Tensor:
        wants, got = (self.n_static > 0, self.n_books > 0), (static is not None, books is not None)
        if wants != got:
            raise ValueError(
                f"static inputs do not match this model (n_static={self.n_static}, "
                f"n_books={self.n_books}; got static={got[0]}, books={got[1]})"
            )
        mask = mask.bool()
        key_mask, has_any = _safe_key_mask(mask)
        pad = ~mask.unsqueeze(-1)
        a = self.proj_a(x_a.masked_fill(pad, 0.0))
        b = self.proj_b(x_b.masked_fill(pad, 0.0))
        keep = mask.unsqueeze(-1).to(a.dtype)
        a, b = a * keep, b * keep
        t = mask.shape[1]
        key_bias = torch.zeros(key_mask.shape, dtype=torch.float32, device=mask.device)
        key_bias = key_bias.masked_fill(~key_mask, float("-inf"))
        bias = alibi_bias(self.slopes, t).unsqueeze(0) + key_bias[:, None, None, :]
        for layer in self.layers:
            a, b = layer(a, b, bias, keep)
        summary = torch.cat([self.pool_a(a, key_mask), self.pool_b(b, key_mask)], dim=-1)
        summary = summary * has_any.unsqueeze(-1).to(summary.dtype)
        market = self.market_embedding(market_type.long()).to(summary.dtype)
        parts = [summary, market]
        if static is not None:
            parts.append(static.to(summary.dtype))
        if books is not None:
            parts.append(self.book_embedding(books.long()).flatten(1).to(summary.dtype))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)


class MaskedLSTM(nn.Module):
    """Masked multi-layer LSTM -> one logit (e.g. a side's win probability).

    Steps with no data can sit anywhere in the window (pre-match sources observe only a
    few moments): their inputs are zeroed and the mask is appended as an input feature,
    so the recurrence knows a step is missing instead of reading a fake zero price.
    Trailing padding (after the last real step) never enters the recurrence: the batch
    is packed to each sample's real length (index of its last True + 1) and the logit is
    read from the final hidden state at that step. So padding a batch, or batching a
    sample with longer ones, does not change its output.

    Inputs: x [B, T, F] float, mask [B, T] bool (True = real step); ``x_raw`` (the unscaled
    values the served model also passes) is accepted and ignored. Output: logits [B].
    """

    def __init__(
        self, n_features: int, hidden: int = 64, num_layers: int = 2, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.hparams = {
            "n_features": n_features,
            "hidden": hidden,
            "num_layers": num_layers,
            "dropout": dropout,
        }
        self.lstm = nn.LSTM(
            n_features + 1,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor, mask: Tensor, x_raw: Tensor | None = None) -> Tensor:
        mask = mask.bool()
        m = mask.unsqueeze(-1)
        inputs = torch.cat([x.masked_fill(~m, 0.0), m.to(x.dtype)], dim=-1)
        last = _last_hidden(self.lstm, inputs, mask)
        return self.head(self.drop(last)).squeeze(-1)


def _last_hidden(lstm: nn.LSTM, inputs: Tensor, mask: Tensor) -> Tensor:
    """The final hidden state at each sample's last real step (top layer).

    Trailing padding never enters the recurrence (packed to the real length); a sample with
    no real step gets a zero state.
    """
    steps = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    lengths = (mask * steps).amax(dim=1)  # last real step + 1; 0 when none
    has_any = lengths > 0
    packed = pack_padded_sequence(
        inputs, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
    )
    _, (h_n, _) = lstm(packed)
    return h_n[-1] * has_any.unsqueeze(-1).to(h_n.dtype)


class MarketResidualLSTM(nn.Module):
    """The market's logit plus a learned correction: an untrained model IS the market.

    Why: on real data the de-vigged market is a very strong forecast; a network that has
    to rediscover it from scaled prices ends up worse than it (EPL Brier ratio ~1.03).
    Here ``logit = logit(p_market) + correction`` with a correction that is exactly zero
    at initialisation, so training starts from the market and weight decay pulls back to it.

    - ``p_market`` is read from the *raw* (unscaled) inputs the served model gets too:
      channel ``market_channel`` (the dataset's ``sharp_prob``: de-vigged sharp book, else
      consensus) at the last real step, which is the dataset's ``market_prob`` at the
      decision time. Rows without it (no such channel, NaN, or not in (0, 1)) fall back to
      a learned constant base (initially 0 = probability 0.5); a ``market_known`` flag
      enters the correction head, so the correction can differ for those rows.
    - No imputed channels: besides the z-scored values (NaN -> 0) the recurrence reads a
      per-channel *known* flag (raw value finite on a real step), so "missing" is never
      confused with "at the training mean" (e.g. EPL time of day before 2019/20, which the
      dataset leaves NaN because the kickoff time was imputed).
    - The first layer's input weights start at zero: a channel (or known flag) that the
      train window never fills gets no gradient and keeps exactly zero weight, so its
      first appearance in validation/test cannot move the forecast.
    - The correction head reads ``h(inputs) - h(nothing)``: the final hidden state minus
      that of the same steps with every input zero (no value known). With zero input
      weights the two are equal, so the correction starts at exactly zero although the
      head's weights on the state start random (the usual init: the correction learns at
      once; a zero head behind zero input weights would start quadratically slowly). The
      head's weights on the flag and the market logit, and its bias, start at zero.
    - Post-hoc calibration ``a * logit + b`` (Platt, fit on the validation window by
      ``loop.fit`` and kept only when a likelihood-ratio test rejects the identity,
      ``loop.choose_calibration``) is part of the hyper-parameters, so the logged spec
      carries it and the served model applies it; identity while training.

    Besides the state difference the head reads ``market_known`` and the market logit (so
    it can also learn a recalibration of the market itself, e.g. the favourite-longshot
    bias).

    Inputs: x [B, T, F] scaled, mask [B, T] bool, x_raw [B, T, F] unscaled (NaN = no
    value; None = every real step known and no market). Output: logits [B].
    """

    def __init__(
        self,
        n_features: int,
        hidden: int = 32,
        num_layers: int = 1,
        dropout: float = 0.2,
        market_channel: int | None = None,
        calibration: tuple[float, float] | list[float] = (1.0, 0.0),
    ) -> None:
        super().__init__()
        if market_channel is not None and not 0 <= market_channel < n_features:
            raise ValueError(f"market_channel={market_channel} not in [0, {n_features})")
        self.market_channel = market_channel
        self.hparams: dict[str, Any] = {
            "n_features": n_features,
            "hidden": hidden,
            "num_layers": num_layers,
            "dropout": dropout,
            "market_channel": market_channel,
            "calibration": [float(calibration[0]), float(calibration[1])],
        }
        self.lstm = nn.LSTM(
            2 * n_features + 1,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        with torch.no_grad():
            self.lstm.weight_ih_l0.zero_()
        self.drop = nn.Dropout(dropout)
        self.correction = nn.Linear(hidden + 2, 1)
        with torch.no_grad():  # state weights: the usual init; flag, market, bias: zero
            self.correction.weight[:, hidden:] = 0.0
        nn.init.zeros_(self.correction.bias)
        self.fallback_logit = nn.Parameter(torch.zeros(()))
        # Not in the state dict: the spec's hparams are the one record of the calibration.
        self.register_buffer(
            "platt",
            torch.tensor(self.hparams["calibration"], dtype=torch.float32),
            persistent=False,
        )

    def set_calibration(self, slope: float, intercept: float) -> None:
        """Post-hoc calibration of the output logit (identity = 1, 0); kept in hparams."""
        self.hparams["calibration"] = [float(slope), float(intercept)]
        self.platt.copy_(torch.tensor([slope, intercept], dtype=torch.float32))

    def market_logit(self, mask: Tensor, x_raw: Tensor | None) -> tuple[Tensor, Tensor]:
        """(logit of the market probability at the last real step, known flag) per sample."""
        b = mask.shape[0]
        mask = mask.bool()
        if x_raw is None or self.market_channel is None:
            zeros = torch.zeros(b, device=mask.device)
            return zeros, zeros.bool()
        steps = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        last = ((mask * steps).amax(dim=1) - 1).clamp(min=0)
        p = x_raw[torch.arange(b, device=mask.device), last, self.market_channel].float()
        known = mask.any(dim=1) & torch.isfinite(p) & (p > 0) & (p < 1)
        p = torch.where(known, p, torch.full_like(p, 0.5))
        return torch.log(p) - torch.log1p(-p), known

    def forward(self, x: Tensor, mask: Tensor, x_raw: Tensor | None = None) -> Tensor:
        mask = mask.bool()
        m = mask.unsqueeze(-1)
        known = m.expand_as(x) if x_raw is None else torch.isfinite(x_raw) & m
        values = x.masked_fill(~known, 0.0)
        inputs = torch.cat([values, known.to(x.dtype), m.to(x.dtype)], dim=-1)
        moved = _last_hidden(self.lstm, inputs, mask) - _last_hidden(
            self.lstm, torch.zeros_like(inputs), mask
        )
        market, market_known = self.market_logit(mask, x_raw)
        flag = market_known.to(moved.dtype)
        # market is 0 where unknown (p = 0.5), so the head reads no made-up logit there
        head_in = torch.cat(
            [self.drop(moved), flag.unsqueeze(-1), market.to(moved.dtype).unsqueeze(-1)], dim=-1
        )
        correction = self.correction(head_in).squeeze(-1).float()
        base = torch.where(market_known, market, self.fallback_logit.float().expand_as(market))
        return self.platt[0] * (base + correction) + self.platt[1]
