"""One training loop for both models: AdamW, cosine schedule, early stopping, bf16 on CUDA.

Data interface: a dataset is a dict of equal-length arrays/tensors (``{"x": ..., "mask":
..., "y": ...}``); ``input_keys`` names the model's positional inputs in order (or is a
function ``batch -> tuple``), ``label_key`` the 0/1 target. Both models use the same loop.

Dagster-, Optuna- and MLflow-free on purpose: the Dagster layer logs through ``on_epoch``,
and an Optuna pruning callback raises ``TrialPruned`` from there (or returns True to stop).
This module imports torch at import time: only the Dagster layer's functions import it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from odds_pipeline.training.kinds import CALIBRATION_ALPHA

__all__ = [
    "DEVICE_ENV",
    "TrainConfig",
    "TrainResult",
    "autocast_context",
    "fit",
    "fit_platt",
    "make_input_fn",
    "predict_logits",
    "predict_proba",
    "seed_everything",
    "select_device",
    "to_tensors",
    "train_step",
]

log = logging.getLogger(__name__)

DEVICE_ENV = "ODDS_PIPELINE_DEVICE"

Batch = Mapping[str, Tensor]
InputFn = Callable[[Batch], tuple[Tensor, ...]]
EpochCallback = Callable[[int, dict[str, float]], bool | None]


def select_device(prefer: str | None = None) -> torch.device:
    """CUDA, then MPS, then CPU; ``prefer`` or $ODDS_PIPELINE_DEVICE overrides ("auto" = pick).

    An explicitly requested device that is not available is an error rather than a silent
    fallback: a run configured for the GPU should not quietly train for hours on a CPU.
    """
    choice = (prefer or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {choice!r} requested but CUDA is not available")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {choice!r} requested but MPS is not available")
    return device


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels.

    ``warn_only=True``: an op without a deterministic CUDA kernel warns instead of failing
    a training run. On CPU the loop is bit-for-bit reproducible for a fixed thread count.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this before its first use to be deterministic (no effect on CPU).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@dataclass
class TrainConfig:
    """Training hyper-parameters (all JSON-able, so the Launchpad and MLflow can show them).

    The learning rate follows a cosine curve per optimizer step from ``lr`` down to
    ``lr * min_lr_ratio`` over the *planned* ``epochs`` (CosineAnnealingLR); early stopping
    simply cuts it short. ``pos_weight``: None, a number, or "auto" (negatives/positives
    of the training labels) for imbalanced targets such as ``arb_ahead``.
    ``torch_threads``: small models on a shared 2-core machine can run many times faster
    with 1 thread (intra-op threads spin against other processes); restored after ``fit``.
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 5
    min_delta: float = 1e-4
    grad_clip: float | None = 1.0
    seed: int = 7
    num_workers: int = 0
    device: str | None = None
    amp: bool = True
    pos_weight: float | str | None = None
    min_lr_ratio: float = 0.01
    deterministic: bool = True
    torch_threads: int | None = None  # CPU intra-op threads while fitting; None = torch default
    # Models with ``set_calibration`` (the market-residual LSTM) get a Platt fit of their
    # output logit on the validation window after training (never on test).
    calibrate: bool = True
    # ... applied only when a likelihood-ratio test against the identity rejects at this
    # level (None: always applied; see kinds.CALIBRATION_ALPHA).
    calibration_alpha: float | None = CALIBRATION_ALPHA
    # Epoch 0 competes in early stopping: the initial weights are kept when no epoch beats
    # them on validation. For a model that starts as its baseline (the market-residual
    # LSTM starts as the market) training can then never return something worse than the
    # baseline on validation (a randomly initialised model is almost never kept).
    keep_initial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What ``fit`` did: the model holds the best epoch's weights when it returns."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int  # 1-based; 0 = the initial weights (keep_initial) or no epoch ran
    best_val_loss: float
    stopped_early: bool  # patience ran out or on_epoch asked to stop
    stop_reason: str  # "completed" | "early_stopping" | "callback"
    device: str
    seconds: float
    n_train: int
    n_val: int
    pos_weight: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    # Post-hoc calibration on validation (``choose_calibration``): the applied slope and
    # intercept, whether applied, the fit, its likelihood-ratio test, val log loss before/after.
    calibration: dict[str, float] | None = None
    initial_val_loss: float | None = None  # validation loss before training (keep_initial)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-able figures for Dagster metadata and MLflow metrics."""
        return {
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "device": self.device,
            "train_seconds": round(self.seconds, 3),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "pos_weight": self.pos_weight,
            "initial_val_loss": self.initial_val_loss,
            **{f"calibration_{k}": v for k, v in (self.calibration or {}).items()},
        }


def to_tensors(data: Mapping[str, Any], keys: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Arrays -> CPU tensors of one length; floating data becomes float32 (the models' dtype).

    ``keys`` limits the conversion to what the model and loss read, so a dataset dict may
    carry other columns (event ids as strings, for instance). Memory-mapped arrays of two
    or more dimensions (``np.memmap``: sequences saved with `SequenceDataset.save` and
    loaded with ``mmap=True``) are not read: they stay mapped and `_batches` reads only
    each batch's rows (the same values, so the same training).
    """
    out: dict[str, Any] = {}
    for key in keys if keys is not None else list(data):
        if key not in data:
            raise KeyError(f"dataset has no {key!r} (has {sorted(data)})")
        if _is_mapped(data[key]):
            out[key] = data[key]
            continue
        t = torch.as_tensor(data[key])
        if t.is_floating_point() and t.dtype != torch.float32:
            t = t.float()
        out[key] = t
    lengths = {k: (t.shape[0] if t.ndim else -1) for k, t in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"dataset arrays differ in length: {lengths}")
    return out


def _needed_keys(input_keys: Sequence[str] | InputFn, *extra: str) -> list[str] | None:
    """Keys to convert, or None (all) when a function picks the inputs."""
    if callable(input_keys):
        return None
    return list(dict.fromkeys([*input_keys, *extra]))


def make_input_fn(input_keys: Sequence[str] | InputFn) -> InputFn:
    """``("x", "mask")`` -> ``batch -> (batch["x"], batch["mask"])``; functions pass through."""
    if callable(input_keys):
        return input_keys
    keys = tuple(input_keys)
    return lambda batch: tuple(batch[k] for k in keys)


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA only (no loss scaling needed); a no-op elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _length(data: Mapping[str, Tensor]) -> int:
    return next(iter(data.values())).shape[0]


def _is_mapped(value: Any) -> bool:
    return isinstance(value, np.memmap) and value.ndim >= 2


def _rows(value: Any, rows: slice | np.ndarray) -> Tensor:
    """Rows of a memory-mapped array as a new CPU tensor (float data as float32)."""
    t = torch.from_numpy(np.array(value[rows]))
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


def _to_device(data: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors moved to ``device``; memory-mapped arrays stay where they are (read per batch)."""
    return {k: v if _is_mapped(v) else v.to(device) for k, v in data.items()}


def _batches(
    data: Mapping[str, Tensor],
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
) -> Iterator[dict[str, Tensor]]:
    """Mini-batches; shuffled when a generator is given (seeded, so reproducible).

    With ``num_workers == 0`` (default) the tensors are already in memory, and on the
    device, and are indexed directly, far cheaper than a DataLoader for these small
    datasets. ``num_workers > 0`` uses a DataLoader (pinned memory on CUDA).
    """
    n = _length(data)
    if num_workers > 0:
        keys = list(data)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(
                *(_rows(data[k], slice(None)) if _is_mapped(data[k]) else data[k] for k in keys)
            ),
            batch_size=batch_size,
            shuffle=generator is not None,
            generator=generator,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        for tensors in loader:
            yield {k: t.to(device, non_blocking=True) for k, t in zip(keys, tensors, strict=True)}
        return
    order = torch.randperm(n, generator=generator) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            rows = slice(start, start + batch_size)
            yield {
                k: (_rows(v, rows) if _is_mapped(v) else v[rows]).to(device)
                for k, v in data.items()
            }
        else:
            idx = order[start : start + batch_size]
            yield {
                k: (_rows(v, idx.numpy()) if _is_mapped(v) else v[idx.to(v.device)]).to(device)
                for k, v in data.items()
            }


def _resolve_pos_weight(value: float | str | None, y: Tensor) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"pos_weight must be None, a number or 'auto', got {value!r}")
        positives = float(y.sum())
        negatives = float(y.numel()) - positives
        return negatives / positives if positives > 0 else None
    return float(value)


def train_step(
    model: nn.Module,
    batch: Batch,
    *,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    input_fn: InputFn,
    label_key: str,
    grad_clip: float | None,
    device: torch.device,
    amp: bool,
) -> Tensor:
    """One optimizer step (forward, loss in fp32, backward, clip, step); returns the loss.

    The returned loss is detached and not synchronised, so the GPU is never stalled.
    Shared by ``fit`` and the benchmark, so the benchmark measures the real step.
    """
    with autocast_context(device, amp):
        logits = model(*input_fn(batch))
    loss = criterion(logits.float(), batch[label_key].float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def _mean_loss(
    model: nn.Module,
    data: Mapping[str, Tensor],
    *,
    criterion: nn.Module,
    input_fn: InputFn,
    label_key: str,
    batch_size: int,
    device: torch.device,
    amp: bool,
) -> float:
    model.eval()
    total = torch.zeros((), device=device)
    for batch in _batches(data, batch_size, device):
        with autocast_context(device, amp):
            logits = model(*input_fn(batch))
        loss = criterion(logits.float(), batch[label_key].float())
        total += loss * batch[label_key].shape[0]
    return float(total) / _length(data)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay weight matrices only (the usual AdamW practice): not biases, norms, pool queries."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def fit(
    model: nn.Module | Callable[[], nn.Module],
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    *,
    input_keys: Sequence[str] | InputFn = ("x", "mask"),
    label_key: str = "y",
    config: TrainConfig | None = None,
    on_epoch: EpochCallback | None = None,
    select_metric: str = "val_loss",
) -> TrainResult:
    """Train with AdamW + per-step cosine LR + early stopping on validation loss.

    ``select_metric="auc_pr"`` selects the epoch (and runs early stopping) on the
    validation AUC-PR instead (higher is better; the metrics carry ``val_auc_pr``): for
    rare targets such as ``arb_ahead``, where the loss and the ranking at the top disagree.
    ``best_val_loss`` is then the validation loss of the selected epoch.

    ``model`` may be a module or a zero-argument factory; a factory is called after
    seeding, so initial weights are reproducible too (pass a module built after
    ``seed_everything`` for the same effect). ``on_epoch(epoch, metrics)`` is called after
    each epoch with train_loss, val_loss, best_val_loss, lr, seconds, samples_per_s; a
    True return stops training (an exception, e.g. Optuna's TrialPruned, propagates).
    The best epoch's weights are restored before returning. ``val_loss`` uses the same
    criterion as training (including ``pos_weight``), so early stopping tracks the
    optimised objective.
    """
    config = config or TrainConfig()
    threads = torch.get_num_threads()
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    try:
        return _fit(model, train, val, input_keys, label_key, config, on_epoch, select_metric)
    finally:
        torch.set_num_threads(threads)


def _fit(
    model: nn.Module | Callable[[], nn.Module],
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    input_keys: Sequence[str] | InputFn,
    label_key: str,
    config: TrainConfig,
    on_epoch: EpochCallback | None,
    select_metric: str = "val_loss",
) -> TrainResult:
    if select_metric not in ("val_loss", "auc_pr"):
        raise ValueError(f"select_metric must be 'val_loss' or 'auc_pr', got {select_metric!r}")
    started = time.perf_counter()
    seed_everything(config.seed, deterministic=config.deterministic)
    if not isinstance(model, nn.Module):
        model = model()
    device = select_device(config.device)
    amp = config.amp and device.type == "cuda"
    model.to(device)

    keys = _needed_keys(input_keys, label_key)
    train_t, val_t = to_tensors(train, keys), to_tensors(val, keys)
    n_train, n_val = _length(train_t), _length(val_t)
    if n_train == 0 or n_val == 0:
        raise ValueError(f"empty dataset: {n_train} training and {n_val} validation rows")
    if config.num_workers == 0:
        train_t, val_t = _to_device(train_t, device), _to_device(val_t, device)

    input_fn = make_input_fn(input_keys)
    pos_weight = _resolve_pos_weight(config.pos_weight, train_t[label_key].float())
    criterion = nn.BCEWithLogitsLoss(
        pos_weight=None if pos_weight is None else torch.tensor(pos_weight, device=device)
    )
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer,
        T_max=max(1, config.epochs * steps_per_epoch),
        eta_min=config.lr * config.min_lr_ratio,
    )
    generator = torch.Generator().manual_seed(config.seed)

    def validation_loss() -> float:
        return _mean_loss(
            model,
            val_t,
            criterion=criterion,
            input_fn=input_fn,
            label_key=label_key,
            batch_size=max(config.batch_size, 1024),
            device=device,
            amp=amp,
        )

    def selection(val_loss: float) -> tuple[float, dict[str, float]]:
        """(value to minimise, extra metrics) for the epoch just validated."""
        if select_metric == "val_loss":
            return val_loss, {}
        ap = _val_auc_pr(model, val_t, input_fn, label_key, device, amp, config.batch_size)
        return -ap, {"val_auc_pr": ap}

    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state, bad_epochs = math.inf, 0, None, 0
    best_key = math.inf
    stop_reason = "completed"
    initial_val = None
    if config.keep_initial:
        initial_val = best_val = validation_loss()
        best_key = selection(initial_val)[0]
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        total = torch.zeros((), device=device)
        for batch in _batches(
            train_t, config.batch_size, device, generator, num_workers=config.num_workers
        ):
            loss = train_step(
                model,
                batch,
                optimizer=optimizer,
                criterion=criterion,
                input_fn=input_fn,
                label_key=label_key,
                grad_clip=config.grad_clip,
                device=device,
                amp=amp,
            )
            scheduler.step()
            total += loss * batch[label_key].shape[0]
        train_loss = float(total) / n_train
        train_seconds = time.perf_counter() - epoch_start
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss is {train_loss} at epoch {epoch} (lr {config.lr}): "
                "check the inputs for NaN/inf or lower the learning rate"
            )
        val_loss = validation_loss()
        key, extra = selection(val_loss)
        if key < best_key - config.min_delta:
            best_key, best_val, best_epoch, bad_epochs = key, val_loss, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            **extra,
            "best_val_loss": best_val,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - epoch_start,
            "samples_per_s": n_train / train_seconds if train_seconds > 0 else math.nan,
        }
        history.append(metrics)
        log.info(
            "epoch %d/%d train_loss %.5f val_loss %.5f lr %.2e %.1fs",
            epoch,
            config.epochs,
            train_loss,
            val_loss,
            metrics["lr"],
            metrics["seconds"],
        )
        if on_epoch is not None and on_epoch(epoch, dict(metrics)):
            stop_reason = "callback"
            break
        if bad_epochs >= config.patience:
            stop_reason = "early_stopping"
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    calibration = None
    if config.calibrate and callable(getattr(model, "set_calibration", None)):
        calibration = _calibrate(
            model, val_t, input_keys, label_key, device, amp, config.calibration_alpha
        )
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_val_loss=best_val,
        stopped_early=stop_reason != "completed",
        stop_reason=stop_reason,
        device=str(device),
        seconds=time.perf_counter() - started,
        n_train=n_train,
        n_val=n_val,
        pos_weight=pos_weight,
        config=copy.deepcopy(config.to_dict()),
        calibration=calibration,
        initial_val_loss=initial_val,
    )


def _val_auc_pr(
    model: nn.Module,
    val: Mapping[str, Tensor],
    input_fn: InputFn,
    label_key: str,
    device: torch.device,
    amp: bool,
    batch_size: int,
) -> float:
    """Validation AUC-PR (average precision) of the model's logits; NaN with one class."""
    from odds_pipeline.training.evaluation import average_precision

    logits = predict_logits(model, val, input_fn, max(batch_size, 1024), device, amp)
    y = val[label_key].double().cpu().numpy()
    p = 1.0 / (1.0 + np.exp(-np.clip(logits, -700.0, 700.0)))
    ap = average_precision(y, p)
    return ap if math.isfinite(ap) else 0.0


def fit_platt(logits: Any, y: Any, l2: float = 1e-6) -> tuple[float, float]:
    """(slope, intercept) maximising the likelihood of P(y=1) = sigmoid(slope*logit + intercept).

    Damped Newton (step halving while the penalised log loss does not fall) from the
    identity (1, 0), with a tiny ridge towards it; a non-finite or non-positive slope (a
    forecast that ranks backwards) returns the identity instead.
    """
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    X = np.stack([z, np.ones_like(z)], axis=1)
    prior = np.array([1.0, 0.0])

    def loss(w: np.ndarray) -> float:
        s = X @ w
        return float(np.sum(np.logaddexp(0.0, s) - t * s) + 0.5 * l2 * np.sum((w - prior) ** 2))

    w = prior.copy()
    current = loss(w)
    for _ in range(100):
        s = X @ w
        p = np.exp(-np.logaddexp(0.0, -s))  # stable sigmoid
        grad = X.T @ (p - t) + l2 * (w - prior)
        hess = (X * (p * (1.0 - p))[:, None]).T @ X + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        for _ in range(40):
            candidate = w - step
            value = loss(candidate)
            if value <= current:
                break
            step = step / 2.0
        else:
            break
        w, improvement, current = candidate, current - value, value
        if np.abs(step).max() < 1e-12 or improvement < 1e-12 * max(1.0, abs(current)):
            break
    if not np.isfinite(w).all() or w[0] <= 0:
        return 1.0, 0.0
    return float(w[0]), float(w[1])


def _bce(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, logits) - y * logits))


def choose_calibration(
    logits: Any, y: Any, alpha: float | None = CALIBRATION_ALPHA
) -> dict[str, float]:
    """Platt fit of validation logits, kept only when the data show it beats the identity.

    The likelihood-ratio statistic 2 * (LL(fit) - LL(identity)) is chi-square with 2
    degrees of freedom when the identity is right; below the ``alpha`` critical value the
    fit is noise of this validation window and the identity (1, 0) is returned instead.
    ``fitted_*`` always hold the fit; ``slope``/``intercept`` are what is applied. A window
    with one class only, or non-finite logits, cannot judge a calibration: identity.
    """
    from scipy.stats import chi2

    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y, dtype=np.float64)
    judgeable = len(t) > 0 and t.min() < t.max() and bool(np.isfinite(z).all())
    fitted = fit_platt(z, t) if judgeable else (1.0, 0.0)
    before = _bce(z, t) if len(t) else math.nan
    after = _bce(fitted[0] * z + fitted[1], t) if len(t) else math.nan
    statistic = 2.0 * len(z) * (before - after) if judgeable else 0.0
    statistic = max(statistic, 0.0) if math.isfinite(statistic) else 0.0
    p_value = float(chi2.sf(statistic, df=2))
    applied = judgeable and (alpha is None or p_value < alpha)
    slope, intercept = fitted if applied else (1.0, 0.0)
    return {
        "slope": slope,
        "intercept": intercept,
        "applied": float(applied),
        "fitted_slope": fitted[0],
        "fitted_intercept": fitted[1],
        "lr_statistic": statistic,
        "p_value": p_value,
        "val_log_loss_before": before,
        "val_log_loss_after": after if applied else before,
    }


def _calibrate(
    model: nn.Module,
    val: Mapping[str, Tensor],
    input_keys: Sequence[str] | InputFn,
    label_key: str,
    device: torch.device,
    amp: bool,
    alpha: float | None = CALIBRATION_ALPHA,
) -> dict[str, float]:
    """Platt-scale the model's output on the validation window; stored in the model itself."""
    model.set_calibration(1.0, 0.0)
    logits = predict_logits(model, val, input_keys, device=device, amp=amp)
    y = val[label_key].double().cpu().numpy()
    calibration = choose_calibration(logits, y, alpha)
    model.set_calibration(calibration["slope"], calibration["intercept"])
    return calibration


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    data: Mapping[str, Any],
    input_keys: Sequence[str] | InputFn = ("x", "mask"),
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> np.ndarray:
    """Logits in eval mode, on the model's device unless ``device`` is given (fp32 default)."""
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.to(device).eval()
    input_fn = make_input_fn(input_keys)
    tensors = to_tensors(data, _needed_keys(input_keys))
    outputs = []
    for batch in _batches(tensors, batch_size, device):
        with autocast_context(device, amp):
            outputs.append(model(*input_fn(batch)).float().cpu())
    if not outputs:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(outputs).double().numpy()


def predict_proba(
    model: nn.Module,
    data: Mapping[str, Any],
    input_keys: Sequence[str] | InputFn = ("x", "mask"),
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> np.ndarray:
    """P(label = 1) as float64 numpy, ready for ``evaluation.binary_metrics``."""
    logits = predict_logits(model, data, input_keys, batch_size, device, amp)
    e = np.exp(-np.abs(logits))  # stable logistic: no overflow, full precision near 0 and 1
    return np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
