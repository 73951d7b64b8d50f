"""Benchmark: training throughput of the project's NAS-Bench-101 network against a plain reference.

The project's network (``jobs.network.build_network``: all 1x1 input projections of a cell fused
into one convolution, the layout ``jobs.train`` uses on a CPU) and :class:`ReferenceNetwork`, a
literal reading of NAS-Bench-101's ``model_builder.build_module`` / ``build_model_fn`` and
``base_ops`` written out below (one module per vertex, one 1x1 projection per input edge, no
fusion, no channels-last), train on the same random CIFAR-shaped batch with the same optimizer
(``jobs.recipe.make_optimizer``: TF-style RMSProp with L2 decay), starting from the same weights
(copied from the project's network with :func:`load_project_weights`). Each repetition times
``--steps`` forward + backward + optimizer steps of each, in rotating order (so drifts in the
load of a shared machine hit both alike); the median images/s of each is compared.
``tests/jobs/test_network_reference.py`` checks that the two compute the same function with the
same parameter count, so the ratio compares like with like.

Specs: NAS-Bench-101's Inception-like README cell and ``--samples`` cells drawn uniformly from the
space, in a reduced network (stem 32, 3 stacks x 1 cell, batch 64); then the full network (stem 128,
3 x 3 cells) for the Inception-like cell with a few steps. One torch thread by default: on a 2-core
machine shared with other work, two OpenMP threads waiting for each other make single timings vary
several-fold; ``--threads 0`` keeps torch's default. Takes about 2 minutes on 2 shared cores.

    python -m benchmarks.network_speed [--stem 32 --stacks 3 --cells 1 --batch 64 --samples 3]
                                       [--steps 1 --reps 11] [--full-steps 1 --full-reps 3]
                                       [--threads 1] [--channels-last] [--malloc-tuned]

The last line printed is one JSON object: per spec and overall (geometric mean over the reduced
network's specs; ``not_slower`` is that mean >= 1.0) the ratio project / reference of median
images/s, the same ratio in images per CPU second (steadier on a busy machine: it leaves out the
time other processes held the core), minor page faults per step of each network, every run's
images/s, the machine's load averages and the settings. ``--channels-last`` and ``--malloc-tuned``
are diagnostics: the project's network in channels-last layout on the CPU, and glibc's allocator
told to keep big freed blocks instead of handing them back to the kernel.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jobs.cell import INPUT, OPS, OUTPUT, CellSpec, sample_specs
from jobs.network import NetworkConfig, build_network
from jobs.recipe import RecipeConfig, make_optimizer

CONV3X3, CONV1X1, MAXPOOL3X3 = OPS

# The Inception-like cell of NAS-Bench-101's README.
INCEPTION = CellSpec.create(
    [
        [0, 1, 1, 1, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    [INPUT, CONV1X1, CONV3X3, CONV3X3, CONV3X3, MAXPOOL3X3, OUTPUT],
)


# --------------------------------------------------------------------------------------------
# The reference: NAS-Bench-101's model_builder.py and base_ops.py, read literally.
# --------------------------------------------------------------------------------------------


def reference_vertex_channels(input_channels: int, output_channels: int, matrix: Any) -> list[int]:
    """``model_builder.compute_vertex_channels``, statement by statement (numpy replaced by loops)."""
    num_vertices = len(matrix)
    vertex_channels = [0] * num_vertices
    vertex_channels[0] = input_channels
    vertex_channels[num_vertices - 1] = output_channels
    if num_vertices == 2:
        return vertex_channels
    # in-degree ignoring the input: np.sum(matrix[1:], axis=0)
    in_degree = [sum(matrix[src][dst] for src in range(1, num_vertices)) for dst in range(num_vertices)]
    interior_channels = output_channels // in_degree[num_vertices - 1]
    correction = output_channels % in_degree[num_vertices - 1]
    for v in range(1, num_vertices - 1):
        if matrix[v][num_vertices - 1]:
            vertex_channels[v] = interior_channels
            if correction:
                vertex_channels[v] += 1
                correction -= 1
    for v in range(num_vertices - 3, 0, -1):
        if not matrix[v][num_vertices - 1]:
            for dst in range(v + 1, num_vertices - 1):
                if matrix[v][dst]:
                    vertex_channels[v] = max(vertex_channels[v], vertex_channels[dst])
        assert vertex_channels[v] > 0
    final_fan_in = 0
    for v in range(1, num_vertices - 1):
        if matrix[v][num_vertices - 1]:
            final_fan_in += vertex_channels[v]
        for dst in range(v + 1, num_vertices - 1):
            if matrix[v][dst]:
                assert vertex_channels[v] >= vertex_channels[dst]
    assert final_fan_in == output_channels or num_vertices == 2
    return vertex_channels


def _variance_scaling_(weight: torch.Tensor) -> None:
    """``tf.variance_scaling_initializer()``: truncated normal (2 std), fan-in, scale 1."""
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class ConvBnRelu(nn.Module):
    """``base_ops.conv_bn_relu``: conv (no bias, 'same' padding), batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        _variance_scaling_(self.conv.weight)
        self.bn = nn.BatchNorm2d(out_channels, eps=cfg.bn_eps, momentum=1.0 - cfg.bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class MaxPool3x3(nn.Module):
    """``base_ops.MaxPool3x3``: 3x3 max-pool, stride 1, 'same' padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride=1, padding=1)


def _op(name: str, channels: int, cfg: NetworkConfig) -> nn.Module:
    """``base_ops.OP_MAP[name]`` built for ``channels`` output channels."""
    if name == CONV3X3:
        return ConvBnRelu(channels, channels, 3, cfg)
    if name == CONV1X1:
        return ConvBnRelu(channels, channels, 1, cfg)
    if name == MAXPOOL3X3:
        return MaxPool3x3()
    raise ValueError(f"unknown op {name!r}")


def truncate(inputs: torch.Tensor, channels: int) -> torch.Tensor:
    """``model_builder.truncate``: slice to the first ``channels`` channels (at most one fewer)."""
    input_channels = inputs.shape[1]
    if input_channels < channels:
        raise ValueError("input channel < output channels for truncate")
    if input_channels == channels:
        return inputs
    assert input_channels - channels == 1
    return inputs[:, :channels]


class ReferenceCell(nn.Module):
    """``model_builder.build_module``: per-vertex ops, one projection per edge from the input."""

    def __init__(self, spec: CellSpec, in_channels: int, channels: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.matrix = spec.matrix
        self.num_vertices = len(spec.matrix)
        self.vertex_channels = reference_vertex_channels(in_channels, channels, spec.matrix)
        self.projections = nn.ModuleDict()  # "vertex_t" or "output": projection of the cell input
        self.vertex_ops = nn.ModuleDict()  # "vertex_t": the op at vertex t
        n = self.num_vertices
        for t in range(1, n - 1):
            if self.matrix[0][t]:
                self.projections[f"vertex_{t}"] = ConvBnRelu(in_channels, self.vertex_channels[t], 1, cfg)
            self.vertex_ops[f"vertex_{t}"] = _op(spec.ops[t], self.vertex_channels[t], cfg)
        if self.matrix[0][n - 1]:
            self.projections["output"] = ConvBnRelu(in_channels, channels, 1, cfg)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        n, m, vc = self.num_vertices, self.matrix, self.vertex_channels
        tensors = [inputs]
        final_concat_in = []
        for t in range(1, n - 1):
            add_in = [truncate(tensors[src], vc[t]) for src in range(1, t) if m[src][t]]
            if m[0][t]:
                add_in.append(self.projections[f"vertex_{t}"](tensors[0]))
            if len(add_in) == 1:
                vertex_input = add_in[0]
            else:
                vertex_input = add_in[0]  # tf.add_n
                for other in add_in[1:]:
                    vertex_input = vertex_input + other
            vertex_value = self.vertex_ops[f"vertex_{t}"](vertex_input)
            tensors.append(vertex_value)
            if m[t][n - 1]:
                final_concat_in.append(tensors[t])
        if not final_concat_in:
            assert m[0][n - 1]
            return self.projections["output"](tensors[0])
        outputs = final_concat_in[0] if len(final_concat_in) == 1 else torch.cat(final_concat_in, dim=1)
        if m[0][n - 1]:
            outputs = outputs + self.projections["output"](tensors[0])
        return outputs


class ReferenceNetwork(nn.Module):
    """``model_builder.build_model_fn``'s network: stem, stacks of cells, global mean, dense."""

    def __init__(self, spec: CellSpec, cfg: NetworkConfig) -> None:
        super().__init__()
        self.stem = ConvBnRelu(cfg.in_channels, cfg.stem_channels, 3, cfg)
        self.stacks = nn.ModuleList()
        channels = cfg.stem_channels
        for stack_num in range(cfg.num_stacks):
            in_channels = channels
            if stack_num > 0:
                channels *= 2
            cells = nn.ModuleList()
            for _ in range(cfg.cells_per_stack):
                cells.append(ReferenceCell(spec, in_channels, channels, cfg))
                in_channels = channels
            self.stacks.append(cells)
        self.dense = nn.Linear(channels, cfg.num_classes)
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        net = self.stem(features)
        for stack_num, cells in enumerate(self.stacks):
            assert isinstance(cells, nn.ModuleList)
            if stack_num > 0:
                # tf.layers.max_pooling2d((2, 2), (2, 2), padding='same')
                net = F.max_pool2d(net, 2, stride=2, ceil_mode=True)
            for cell in cells:
                net = cell(net)
        return self.dense(net.mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------
# Weights: which slice of which project tensor every reference tensor is.
# --------------------------------------------------------------------------------------------

_CONV_BN = (
    "conv.weight",
    "bn.weight",
    "bn.bias",
    "bn.running_mean",
    "bn.running_var",
    "bn.num_batches_tracked",
)


def _conv_bn_pairs(
    ref_prefix: str, project_prefix: str, rows: slice | None
) -> dict[str, tuple[str, slice | None]]:
    # The project's conv-bn-relu is nn.Sequential(conv, bn, relu): indices 0 and 1.
    out = {}
    for name in _CONV_BN:
        module, attr = name.split(".")
        project_name = f"{project_prefix}.{0 if module == 'conv' else 1}.{attr}"
        out[f"{ref_prefix}.{name}"] = (project_name, None if attr == "num_batches_tracked" else rows)
    return out


def weight_map(ref: ReferenceNetwork, project: nn.Module) -> dict[str, tuple[str, slice | None]]:
    """For every tensor of ``ref.state_dict()``: (the project state_dict entry, rows along dim 0 or
    None for all of it). A reference projection is its rows of the project's fused projection."""
    out = _conv_bn_pairs("stem", "features.0", slice(None))
    project_cells = [(name, mod) for name, mod in project.named_modules() if type(mod).__name__ == "Cell"]
    ref_cells = [(name, mod) for name, mod in ref.named_modules() if isinstance(mod, ReferenceCell)]
    if len(project_cells) != len(ref_cells):
        raise ValueError(f"{len(project_cells)} project cells, {len(ref_cells)} reference cells")
    for (pname, pcell), (rname, rcell) in zip(project_cells, ref_cells, strict=True):
        n = rcell.num_vertices
        targets = [f"vertex_{t}" for t in pcell.proj_targets] + (["output"] if pcell.out_proj else [])
        start = 0
        for target, width in zip(targets, pcell.proj_split, strict=True):
            out.update(
                _conv_bn_pairs(f"{rname}.projections.{target}", f"{pname}.proj", slice(start, start + width))
            )
            start += width
        for t in range(1, n - 1):
            if isinstance(rcell.vertex_ops[f"vertex_{t}"], ConvBnRelu):
                out.update(
                    _conv_bn_pairs(f"{rname}.vertex_ops.vertex_{t}", f"{pname}.ops.{t - 1}", slice(None))
                )
    out["dense.weight"] = ("classifier.weight", slice(None))
    out["dense.bias"] = ("classifier.bias", slice(None))
    return out


@torch.no_grad()
def load_project_weights(ref: ReferenceNetwork, project: nn.Module) -> None:
    """Copies the project network's parameters and batch-norm buffers into ``ref`` (strict)."""
    state = project.state_dict()
    new = {}
    for ref_name, (project_name, rows) in weight_map(ref, project).items():
        tensor = state[project_name]
        new[ref_name] = (tensor if rows is None else tensor[rows]).clone()
    ref.load_state_dict(new, strict=True)


# --------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------


class Trainer:
    """One model with its optimizer and a fixed batch; :meth:`run` times training steps."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self.model = model.train()
        self.optimizer = make_optimizer(model, RecipeConfig())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.x, self.y = x, y

    def run(self, steps: int) -> tuple[float, float, float]:
        """(images per wall-clock second, images per CPU second of this process, minor page faults
        per step) over ``steps`` forward + backward + optimizer steps. With one thread the CPU figure
        is the compute time alone: it does not count the time other work on a shared machine took
        the core away. Page faults come from big activations that the C allocator maps fresh from
        the kernel (and zero-fills) on every allocation."""
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            loss = F.cross_entropy(self.model(self.x), self.y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        images = steps * len(self.y)
        return images / wall, images / max(cpu, 1e-9), faults / steps


def compare(
    spec: CellSpec,
    cfg: NetworkConfig,
    batch: int,
    steps: int,
    reps: int,
    seed: int,
    lr: float = 0.01,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Median images/s of the project's and the reference network for one spec, interleaved.

    With ``channels_last``, a third contender: the project's network in channels-last layout on
    the CPU (``jobs.train`` uses channels-last only on CUDA); it is reported, not part of the ratio.
    """
    torch.manual_seed(seed)
    project = build_network(spec, cfg)
    ref = ReferenceNetwork(spec, cfg)
    load_project_weights(ref, project)
    params = sum(p.numel() for p in project.parameters())
    assert params == sum(p.numel() for p in ref.parameters())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=gen)
    trainers = {"project": Trainer(project, x, y, lr), "reference": Trainer(ref, x, y, lr)}
    if channels_last:
        twin = build_network(spec, cfg)
        twin.load_state_dict(project.state_dict())
        twin = twin.to(memory_format=torch.channels_last)
        trainers["project_channels_last"] = Trainer(
            twin, x.contiguous(memory_format=torch.channels_last), y, lr
        )
    for trainer in trainers.values():  # warm-up: allocator, kernel selection, optimizer state
        trainer.run(1)
    names = list(trainers)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        # rotate the order so that no contender always runs first or last
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            w, c, f = trainers[name].run(steps)
            wall[name].append(w)
            cpu[name].append(c)
            faults[name].append(f)
    med = {name: statistics.median(values) for name, values in wall.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    paired = statistics.median(p / r for p, r in zip(wall["project"], wall["reference"], strict=True))
    result = {
        "hash": spec.arch_hash,
        "vertices": spec.num_vertices,
        "edges": spec.num_edges,
        "params": params,
        "project_img_s": round(med["project"], 2),
        "reference_img_s": round(med["reference"], 2),
        "ratio": round(med["project"] / med["reference"], 4),
        # median of the ratios of back-to-back runs, and the ratio of images per CPU second
        "paired_ratio": round(paired, 4),
        "cpu_ratio": round(med_cpu["project"] / med_cpu["reference"], 4),
        "project_page_faults_per_step": round(statistics.median(faults["project"])),
        "reference_page_faults_per_step": round(statistics.median(faults["reference"])),
        "project_runs": [round(v, 1) for v in wall["project"]],
        "reference_runs": [round(v, 1) for v in wall["reference"]],
    }
    if channels_last:
        result["project_channels_last_img_s"] = round(med["project_channels_last"], 2)
        result["channels_last_vs_project"] = round(med["project_channels_last"] / med["project"], 4)
        result["channels_last_vs_project_cpu"] = round(
            med_cpu["project_channels_last"] / med_cpu["project"], 4
        )
        result["project_channels_last_runs"] = [round(v, 1) for v in wall["project_channels_last"]]
    return result


def tune_malloc(limit: int = 1 << 30) -> None:
    """glibc only: serve allocations below ``limit`` bytes from the heap and never trim it, instead
    of mmap/munmap per big tensor (each fresh mapping costs a page fault per 4 KiB on first touch)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    if not (libc.mallopt(m_mmap_threshold, limit) and libc.mallopt(m_trim_threshold, limit)):
        raise RuntimeError("mallopt failed")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stem", type=int, default=32, help="stem channels of the reduced network")
    parser.add_argument("--stacks", type=int, default=3)
    parser.add_argument("--cells", type=int, default=1, help="cells per stack of the reduced network")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="training steps per repetition")
    parser.add_argument("--reps", type=int, default=11, help="repetitions of each network")
    parser.add_argument("--samples", type=int, default=3, help="sampled specs besides the Inception-like one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-batch", type=int, default=32, help="batch of the full 128-channel network")
    parser.add_argument("--full-steps", type=int, default=1, help="0 skips the full network")
    parser.add_argument("--full-reps", type=int, default=3)
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="also time the project's network in channels-last layout (diagnostic, not in the ratio)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's default; 1, the default, because OpenMP threads waiting "
        "for each other on a shared 2-core machine swamp the signal)",
    )
    parser.add_argument(
        "--malloc-tuned",
        action="store_true",
        help="keep freed memory in glibc's heap (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD at 1 GiB) "
        "so that big activations are not mapped and zero-filled afresh on every step (diagnostic)",
    )
    args = parser.parse_args(argv)

    if args.malloc_tuned:
        tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    load_before = os.getloadavg()
    specs = [("inception", INCEPTION)] + [
        (f"sample{i}", spec) for i, spec in enumerate(sample_specs(args.samples, seed=args.seed))
    ]
    reduced = NetworkConfig(stem_channels=args.stem, num_stacks=args.stacks, cells_per_stack=args.cells)
    per_spec = {}
    for name, spec in specs:
        result = compare(
            spec, reduced, args.batch, args.steps, args.reps, args.seed, channels_last=args.channels_last
        )
        per_spec[name] = result
        print(
            f"{name:10s} {spec.num_vertices}v {spec.num_edges}e {result['params']:>9,d} params  "
            f"project {result['project_img_s']:8.1f} img/s  reference {result['reference_img_s']:8.1f} img/s  "
            f"ratio {result['ratio']:.3f}"
            + (
                f"  channels-last {result['project_channels_last_img_s']:8.1f} img/s"
                if args.channels_last
                else ""
            ),
            flush=True,
        )
    full = None
    if args.full_steps > 0:
        full = compare(
            INCEPTION, NetworkConfig(), args.full_batch, args.full_steps, args.full_reps, args.seed
        )
        print(
            f"full 128-channel 3x3 inception: project {full['project_img_s']:.1f} img/s  "
            f"reference {full['reference_img_s']:.1f} img/s  ratio {full['ratio']:.3f}",
            flush=True,
        )
    ratios = [r["ratio"] for r in per_spec.values()]
    ratio = statistics.geometric_mean(ratios)  # over the reduced-network specs
    result = {
        "ratio": round(ratio, 4),  # geometric mean over the reduced-network specs
        "min_ratio": min(ratios),
        "cpu_ratio": round(statistics.geometric_mean([r["cpu_ratio"] for r in per_spec.values()]), 4),
        "not_slower": ratio >= 1.0,
        "per_spec": per_spec,
        "full_network_inception": full,
        "settings": {
            "reduced": {"stem_channels": args.stem, "num_stacks": args.stacks, "cells_per_stack": args.cells},
            "batch": args.batch,
            "steps": args.steps,
            "reps": args.reps,
            "full": {"batch": args.full_batch, "steps": args.full_steps, "reps": args.full_reps},
            "optimizer": "jobs.recipe.make_optimizer (TF-style RMSProp, L2 1e-4), lr 0.01",
            "memory_format": "contiguous (NCHW) for both, as jobs.train on a CPU",
            "seed": args.seed,
            "channels_last_variant": args.channels_last,
            "malloc_tuned": args.malloc_tuned,
        },
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # load averages (1, 5, 15 min) before and after: other work on a shared machine
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
