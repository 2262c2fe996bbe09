"""Seconds per training step of every preset with the loader's contiguous NCHW images against the channels-last-
strided tensors it handed the trainer before (issue 19, part 6).

    python benchmarks/input_layout.py [--steps 6] > benchmarks/results/input_layout.md

For each preset: O+C built as `deepobf train` builds them for its default method, a batch of random images at the
preset's size and batch size, and the median seconds of ``--steps`` stage-1 steps (forward, L(C), backward, Adam)
with each layout, alternating the two so that machine load affects both alike. The "before" tensor is made exactly
as the old loader made it (``permute`` then ``float``, no copy).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from deepobfuscator.config import preset
from deepobfuscator.data import AttributeSpec, images_to_tensor
from deepobfuscator.losses import attribute_loss
from deepobfuscator.methods import resolved_config
from deepobfuscator.training.modules import build_modules
from deepobfuscator.training.precision import apply_precision

PRESETS = ("tiny", "demo", "celeba-cpu", "celeba-cpu-hardened", "statefarm-cpu", "celeba-paper")


def strided(images: np.ndarray) -> torch.Tensor:
    """The old loader's tensor: a permuted (channels-last-strided) view converted to float."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def step_seconds(name: str, steps: int, batch: int | None) -> tuple[float, float, list[int]]:
    raw = preset(name)
    task = [AttributeSpec(t) for t in raw.data.task] if raw.data.dataset != "statefarm" else \
        [AttributeSpec("behaviour", 10)]
    cfg = resolved_config(raw, task)  # the rules a run applies when it is created (code head, width, ...)
    h, w = cfg.data.image_size
    n = batch or cfg.train.batch_size
    modules = build_modules(cfg, task, [AttributeSpec("p")], seed=0)
    modules.set_trainable("obfuscator", "classifier")
    params = list(modules.obfuscator.parameters()) + list(modules.classifier.parameters())
    opt = torch.optim.Adam(params, 1e-4)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    target = torch.from_numpy(rng.integers(0, task[0].num_classes, (n, 1)))
    nhwc = build_modules(cfg, task, [AttributeSpec("p")], seed=0)
    nhwc.set_trainable("obfuscator", "classifier")
    apply_precision(nhwc, "none", channels_last=True)
    opt_nhwc = torch.optim.Adam(list(nhwc.obfuscator.parameters()) + list(nhwc.classifier.parameters()), 1e-4)
    times: dict[str, list[float]] = {"contiguous": [], "strided": [], "channels_last": []}
    for i in range(steps + 1):
        for layout, make, mods, optim in (("contiguous", images_to_tensor, modules, opt), ("strided", strided, modules, opt),
                                          ("channels_last", strided, nhwc, opt_nhwc)):
            started = time.perf_counter()
            x = make(pixels)
            loss = attribute_loss(mods.classifier(mods.obfuscator(x)), target, task)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if i:  # the first step of each layout warms up
                times[layout].append(time.perf_counter() - started)
    return (statistics.median(times["strided"]), statistics.median(times["contiguous"]),
            statistics.median(times["channels_last"]), [n, h, w])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--presets", nargs="+", default=list(PRESETS))
    p.add_argument("--paper-batch", type=int, default=16, help="batch of celeba-paper on a CPU (its 64 is for GPUs)")
    args = p.parse_args()
    print(f"# Input layout: seconds per stage-1 training step (`benchmarks/input_layout.py`)\n\nMachine: "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}; median of {args.steps} steps.\n")
    print("| preset | batch, H, W | strided input (before) s | contiguous input s | speed-up | channels-last model "
          "(train.channels_last) s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        before, after, nhwc, shape = step_seconds(name, args.steps,
                                                  args.paper_batch if name == "celeba-paper" else None)
        print(f"| {name} | {shape[0]}, {shape[1]}, {shape[2]} | {before:.3f} | {after:.3f} | {before / after:.2f}x | "
              f"{nhwc:.3f} | {before / nhwc:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
