"""A fast screen of a trained noisy-bottleneck run (`hardened`): fresh attribute attackers on its sent features, in
minutes instead of the full judge's hour, to choose which configurations deserve `deepobf attack`.

The run's noise-free bottleneck means are computed once per split; every training batch and every evaluation then
adds a fresh Gaussian draw of the run's per-channel std (divided by sqrt(m) with `--m`: an attacker who averages m
queries of the same image). Attackers (any of `training.adversaries.build_adversary`: vgg, resnet, linear, mlp) are
trained from scratch on the train split (class-weighted loss for a binary private attribute), early-stopped on the
validation split (patience 8, cap 60 epochs), and scored on the test split averaged over 5 draws: balanced accuracy
for a binary private attribute, accuracy for a multi-class one. C's test accuracy (5 draws, m = 1) is printed
beside, with the share of the test means' variance left within the intended classes. Not a substitute for the judge: single attacker seed, the noise is sampled here rather than by the
deployed graph, no floors or intervals.

    python benchmarks/screen_hardened.py runs/h1 runs/h2 --m 1,8
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepobfuscator.methods import load_trained
from deepobfuscator.dependence import within_class_spread
from deepobfuscator.metrics import balanced_accuracy
from deepobfuscator.models.bottleneck import bottleneck_of
from deepobfuscator.runs import RunDir, open_run_data
from deepobfuscator.training.adversaries import build_adversary

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # noise-free means, intended labels, private labels


def split_means(run: Path) -> tuple[dict[str, Split], torch.Tensor, torch.nn.Module, object]:
    """Noise-free bottleneck means and labels per split, the per-channel noise std ``[1, k, 1, 1]``, C, config."""
    cfg, modules = load_trained(RunDir(run))
    bn = bottleneck_of(modules.obfuscator)
    if bn is None:
        raise SystemExit(f"{run}: no noisy bottleneck to screen (method {cfg.method})")
    data, _ = open_run_data(RunDir(run), cfg, progress=False)
    obf = modules.obfuscator.eval()
    out: dict[str, Split] = {}
    with torch.no_grad():
        for split in ("train", "val", "test"):
            parts = [(obf.mean(b.images), b.task[:, 0], b.private[:, 0]) for b in data.loader(split, 256).epoch(0)]
            out[split] = tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[assignment]
    return out, bn.sigma.detach().view(1, -1, 1, 1), modules.classifier, cfg


def score(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, std: torch.Tensor, balanced: bool,
          draws: int) -> float:
    """Mean (balanced) accuracy of ``net`` over ``draws`` fresh noise draws."""
    net.eval()
    out = []
    with torch.no_grad():
        for _ in range(draws):
            logits = torch.cat([net(x[i:i + 512] + torch.randn_like(x[i:i + 512]) * std) for i in range(0, len(x), 512)])
            pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
            out.append(balanced_accuracy(y.numpy(), pred.numpy()) if balanced else (pred == y).float().mean().item())
    return float(np.mean(out))


def attack(name: str, means: dict[str, Split], std: torch.Tensor, cfg, seed: int) -> dict[str, float]:
    """Train one fresh attacker on the private labels; its test score at the best validation epoch."""
    x, _, z = means["train"]
    n_out = 1 if int(z.max()) <= 1 else int(z.max()) + 1
    balanced = n_out == 1
    torch.manual_seed(seed)
    net = build_adversary(name, tuple(x.shape[1:]), n_out, cfg.model.width, cfg.model.fc_width, cfg.model.batch_norm)
    opt = torch.optim.Adam(net.parameters(), 1e-3 if name == "mlp" else 1e-4)
    pos_weight = ((z == 0).sum() / (z == 1).sum().clamp(min=1)).float()
    best, best_state, best_epoch, bad = -1.0, None, 0, 0
    for epoch in range(60):
        net.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x) - 63, 64):
            j = order[i:i + 64]
            logits = net(x[j] + torch.randn_like(x[j]) * std)
            loss = (F.binary_cross_entropy_with_logits(logits[:, 0], z[j].float(), pos_weight=pos_weight) if balanced
                    else F.cross_entropy(logits, z[j]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        val = score(net, means["val"][0], means["val"][2], std, balanced, 3)
        if val > best:
            best, best_state, best_epoch, bad = val, copy.deepcopy(net.state_dict()), epoch + 1, 0
        else:
            bad += 1
            if bad >= 8:
                break
    net.load_state_dict(best_state)
    return {"test": round(score(net, means["test"][0], means["test"][2], std, balanced, 5), 4), "val": round(best, 4),
            "best_epoch": best_epoch}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--attackers", default="vgg,resnet,mlp")
    p.add_argument("--m", default="1", help="comma-separated query counts averaged by the attacker, inf for the "
                   "noise-free mean (default 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for run in args.runs:
        means, sigma, classifier, cfg = split_means(run)
        x, y, _ = means["test"]
        row = {"run": str(run), "utility_test": round(score(classifier, x, y, sigma, False, 5), 4),
               "within_share_test": round(float(within_class_spread(x, y)), 4)}
        for text in args.m.split(","):
            m = float(text)  # "inf": the averaging limit, the noise-free mean
            per = {a: attack(a, means, sigma / m ** 0.5, cfg, args.seed) for a in args.attackers.split(",")}
            row[f"m{text}"] = {"best": max(v["test"] for v in per.values()), **per}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
