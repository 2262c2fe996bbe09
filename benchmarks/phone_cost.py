"""What the phone runs, per code head: parameters, fp32 size and GFLOPs per image of the on-device module.

    python benchmarks/phone_cost.py > benchmarks/results/phone_cost.md

`hardened`'s code head is chosen by a rule (`models.bottleneck.auto_code_head`): the small MLP head for binary
intended attributes, C's architecture (`vgg`) when one has more than two classes. The second moves C's VGG blocks
3-5 and FC layers onto the phone; this prints what that costs beside O alone and O with the MLP head, at each
preset's width and input size and at the paper's (width 1.0, 218x178, FC-4096), for one image (batch 1). FLOPs are
counted by PyTorch's `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts 2), on the deterministic part
(the noise is one elementwise add). `deepobf bench-device RUN` times a trained run's exported module on this
machine, and its paper-scale row now builds the run's own head.
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from deepobfuscator.config import preset
from deepobfuscator.methods import configure
from deepobfuscator.models.bottleneck import deterministic
from deepobfuscator.training.modules import run_obfuscator

SCALES = {"celeba-cpu": "celeba-cpu", "statefarm-cpu": "statefarm-cpu",
          "paper (celeba-paper, 218x178, width 1.0)": "celeba-paper"}  # table label -> preset
HEADS = {"O alone (no bottleneck)": None, "O + MLP code head": "mlp", "O + C's architecture as the code head": "vgg"}


def cost(preset_name: str, head: str | None, channels: int) -> tuple[int, float]:
    """(parameters, GFLOPs per image) of the on-device module of ``preset_name`` with ``head`` (None: O alone)."""
    cfg = configure(preset(preset_name), "hardened")
    m = cfg.model
    m.bottleneck_channels, m.bottleneck_code, m.bottleneck_code_head = (channels, m.bottleneck_code, head) if head \
        else (0, 0, None)
    model = run_obfuscator(cfg).eval()
    with torch.no_grad(), deterministic(model), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *cfg.data.image_size))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=1, help="code values k (1: one binary intended attribute; State "
                                                           "Farm's rule gives 9)")
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = ["# What the phone runs, per code head (`benchmarks/phone_cost.py`)", "",
             f"One image, batch 1, k = {args.channels} code value(s); parameters, fp32 size, GFLOPs (a multiply-add "
             "counts 2).", "", "| scale | on-device module | parameters | fp32 MiB | GFLOPs |",
             "|---|---|---:|---:|---:|"]
    for label, name in SCALES.items():
        for what, head in HEADS.items():
            n, gflops = cost(name, head, args.channels)
            lines.append(f"| {label} | {what} | {n / 1e6:.2f} M | {n * 4 / 2 ** 20:.1f} | {gflops:.3f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
