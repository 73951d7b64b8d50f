"""Benchmark: what the power sampler costs a training loop.

The same small CPU training loop (a conv net on random CIFAR-shaped data, a fixed number of
steps) runs with the NVML sampler at ``--rate-hz`` and with no sampler, in interleaved
repetitions (so drifts in machine load hit both alike); the median throughput of each is
compared. The sampler is ``NvmlMeter`` over ``FakeNvml`` (no GPU here) with psutil host
readings, i.e. the real per-sample Python work; real NVML calls are C calls that release the
GIL, so this errs on the pessimistic side. The direct cost of one tick is timed too, which gives
the expected overhead (tick cost x rate) without the noise of a shared machine.

    python -m benchmarks.sampler_overhead [--steps 120] [--reps 9] [--rate-hz 10]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

GOAL_PCT = 1.0


def build(batch: int, channels: int, seed: int) -> tuple[Any, Any, Any, Any, Any]:
    """A small conv net, its optimizer, loss and one fixed random CIFAR-shaped batch."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * channels, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    return net, opt, nn.CrossEntropyLoss(), x, y


def train_img_s(steps: int, batch: int, parts: tuple[Any, ...]) -> float:
    """Images per second over ``steps`` forward/backward/step iterations."""
    net, opt, loss_fn, x, y = parts
    began = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - began)


def make_meter(rate_hz: float, run_thread: bool = True) -> Any:
    """The NVML meter (the shared sampling meter around the NVML reader) over one fake GPU."""
    from jobs.meters.fake_nvml import FakeGpu, FakeNvml
    from jobs.meters.host import HostReader
    from jobs.meters.nvml import NvmlMeter

    gpu = FakeGpu(power_w=lambda t: 250.0 + 50.0 * math.sin(t), gpu_util_pct=95.0)
    return NvmlMeter(
        rate_hz=rate_hz, nvml=FakeNvml([gpu]), host=HostReader(), environ={}, run_thread=run_thread
    )


def tick_cost_us(rate_hz: float, n: int = 300) -> float:
    """Median wall time of one sampler tick (all devices, host reading included), in us."""
    meter = make_meter(rate_hz, run_thread=False)  # ticks driven here, one at a time
    meter.start()
    costs = []
    for _ in range(n):
        began = time.perf_counter()
        meter.sample_once()
        costs.append(time.perf_counter() - began)
    meter.stop()
    return 1e6 * statistics.median(costs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="training steps per repetition")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--reps", type=int, default=9, help="repetitions of each condition")
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: OpenMP spinning on a shared machine swamps the signal)",
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    parts = build(args.batch, args.channels, seed=0)
    train_img_s(max(3, args.steps // 4), args.batch, parts)  # warm-up: allocator, kernels

    with_s: list[float] = []
    without: list[float] = []
    samples_taken = 0
    began = time.perf_counter()
    for rep in range(args.reps):
        order = ("with", "without") if rep % 2 == 0 else ("without", "with")
        for condition in order:
            if condition == "without":
                without.append(train_img_s(args.steps, args.batch, parts))
                continue
            meter = make_meter(args.rate_hz)
            meter.start()
            meter.mark("train", rep)
            with_s.append(train_img_s(args.steps, args.batch, parts))
            meter.stop()
            samples_taken += len(meter.drain())
    wall_s = time.perf_counter() - began

    med_with, med_without = statistics.median(with_s), statistics.median(without)
    tick_us = tick_cost_us(args.rate_hz)
    result = {
        "with_sampler_img_s": round(med_with, 2),
        "without_img_s": round(med_without, 2),
        "slowdown_pct": round(100.0 * (med_without - med_with) / med_without, 3),
        # each repetition runs both conditions back to back: the median of the paired ratios
        # cancels slow drifts in the machine's load
        "paired_slowdown_pct": round(
            100.0 * statistics.median(1.0 - w / wo for w, wo in zip(with_s, without, strict=True)), 3
        ),
        "goal_pct": GOAL_PCT,
        "tick_cost_us": round(tick_us, 1),
        "expected_overhead_pct": round(100.0 * tick_us * 1e-6 * args.rate_hz, 4),
        "rate_hz": args.rate_hz,
        "reps": args.reps,
        "steps": args.steps,
        "batch": args.batch,
        "channels": args.channels,
        "spread_without_pct": round(100.0 * (max(without) - min(without)) / med_without, 2),
        "spread_with_pct": round(100.0 * (max(with_s) - min(with_s)) / med_with, 2),
        "samples_taken": samples_taken,
        "torch_threads": torch.get_num_threads(),
        "wall_s": round(wall_s, 1),
        "sampler": "NvmlMeter over FakeNvml (1 GPU) + psutil HostReader",
    }
    print(f"with sampler    {med_with:9.1f} img/s   (runs: {', '.join(f'{v:.0f}' for v in with_s)})")
    print(f"without sampler {med_without:9.1f} img/s   (runs: {', '.join(f'{v:.0f}' for v in without)})")
    print(
        f"one sampler tick {tick_us:.0f} us -> {result['expected_overhead_pct']}% of one core at {args.rate_hz} Hz"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
