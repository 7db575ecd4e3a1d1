"""Training throughput (samples/s) of both models on synthetic data of realistic shape.

Run: .venv/bin/python benchmarks/bench_training.py [--device cpu|cuda|mps] [--steps 200]
     [--warmup 20] [--threads N] [--no-amp] [--models lstm,transformer]

Each step is the real training step of ``odds_pipeline.training.loop.train_step`` (forward,
BCE-with-logits loss, backward, gradient clipping, AdamW step; bf16 autocast on CUDA
unless --no-amp), with the default model sizes. Shapes: LSTM T=24, F=14, batch 256;
transformer T=64, F=10 per book, batch 128. Masks carry gaps and short sequences like the
real datasets. The device comes from ``select_device`` (CUDA, then MPS, then CPU) unless
--device is given; timings are synchronised on CUDA. Figures per model: samples/s and
ms/step after ``--warmup`` steps, parameter count, and the final loss (sanity).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import emit, peak_rss_mb

from odds_pipeline.training.loop import make_input_fn, seed_everything, select_device, train_step
from odds_pipeline.training.models import DualStreamArbTransformer, MaskedLSTM, count_parameters

SHAPES = {
    "lstm": {"T": 24, "F": 14, "batch": 256},
    "transformer": {"T": 64, "F": 10, "batch": 128},
}


def _mask(batch: int, t: int, gen: torch.Generator) -> torch.Tensor:
    """Variable lengths (a quarter short) and ~10% missing steps inside the window."""
    lengths = torch.randint(t // 4, t + 1, (batch,), generator=gen)
    lengths[: batch // 4] = torch.randint(1, max(2, t // 4), (batch // 4,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return mask & (torch.rand(batch, t, generator=gen) > 0.1) | (torch.arange(t)[None, :] == 0)


def _setup(name: str, device: torch.device) -> tuple[torch.nn.Module, list[dict], tuple[str, ...]]:
    """Model and a few distinct synthetic batches already on the device (no loader cost)."""
    shape, gen = SHAPES[name], torch.Generator().manual_seed(0)
    t, f, b = shape["T"], shape["F"], shape["batch"]
    batches = []
    for _ in range(8):
        mask = _mask(b, t, gen)
        if name == "lstm":
            batch = {"x": torch.randn(b, t, f, generator=gen), "mask": mask}
        else:
            batch = {
                "x_a": torch.randn(b, t, f, generator=gen),
                "x_b": torch.randn(b, t, f, generator=gen),
                "mask": mask,
                "market_type": torch.randint(0, 3, (b,), generator=gen),
            }
        batch["y"] = (torch.rand(b, generator=gen) < 0.3).float()
        batches.append({k: v.to(device) for k, v in batch.items()})
    if name == "lstm":
        model, keys = MaskedLSTM(f), ("x", "mask")
    else:
        model, keys = DualStreamArbTransformer(f), ("x_a", "x_b", "mask", "market_type")
    return model.to(device), batches, keys


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def bench(name: str, device: torch.device, steps: int, warmup: int, amp: bool) -> dict[str, object]:
    seed_everything(0)
    model, batches, keys = _setup(name, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    criterion = torch.nn.BCEWithLogitsLoss()
    input_fn = make_input_fn(keys)

    def step(i: int) -> torch.Tensor:
        return train_step(
            model,
            batches[i % len(batches)],
            optimizer=optimizer,
            criterion=criterion,
            input_fn=input_fn,
            label_key="y",
            grad_clip=1.0,
            device=device,
            amp=amp,
        )

    for i in range(warmup):
        step(i)
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(steps):
        loss = step(i)
    _sync(device)
    seconds = time.perf_counter() - start
    batch = SHAPES[name]["batch"]
    return {
        **SHAPES[name],
        "parameters": count_parameters(model),
        "steps": steps,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(time.process_time() - cpu_start, 3),
        "ms_per_step": round(1000 * seconds / steps, 2),
        "samples_per_s": round(steps * batch / seconds, 1),
        "final_loss": round(float(loss), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: select_device)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (default bf16)")
    parser.add_argument("--models", default="lstm,transformer")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    load_start = os.getloadavg()[0]
    results = {
        name: bench(name, device, args.steps, args.warmup, amp) for name in args.models.split(",")
    }
    figures: dict[str, object] = {
        "benchmark": "training_throughput",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "amp_bf16": amp,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": round(load_start, 2),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **results,
    }
    emit(figures)


if __name__ == "__main__":
    main()
