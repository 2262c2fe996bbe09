"""The decoders' fused upsampling against the layers written out (`models.reconstructors`), on a real run.

    python benchmarks/decoder_fusion.py --out runs/fusion --data ../shared/data/celeba
    python benchmarks/decoder_fusion.py --out runs/fusion --run RUN --attackers mirror,resrec --budget full

Every decoder doubles its resolution by a nearest upsampling into a 3x3 convolution; the models run that pair as one
stride-2 transposed convolution (the same function of the same parameters, to float rounding; tests/unit/
test_upsample_fusion.py checks outputs and gradients). This script prints what that is worth and that it changes no
result:

1. per decoder, one training step (forward, MS-SSIM loss, backward, Adam) at the run's image size and width, and at
   the paper's width (1.0), fused and written out, on one thread;
2. `deepobf attack` with the decoders only, run twice on copies of the same run, once with the layers written out
   (``plain_upsampling``) and once fused, same seeds: each decoder's epochs, seconds per epoch and MS-SSIM with its
   95% interval on both paths, and whether the fused value lies inside the written-out one's interval.

Without ``--run`` it trains (or reuses) a `celeba-cpu` Encoder for three stage-1 epochs in OUT/encoder: deterministic
features that keep the image, so the decoders have something to reconstruct (a defended run's decoders all sit at
the constant image, which would make agreement easy).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from deepobfuscator.attacks import AttackSettings, run_attack
from deepobfuscator.config import RunConfig
from deepobfuscator.losses import msssim_loss, resolve_msssim
from deepobfuscator.models import build_reconstructor
from deepobfuscator.models.reconstructors import plain_upsampling
from deepobfuscator.runs import RunDir

DECODERS = ["mirror", "resrec", "urec1", "urec2"]


def step_seconds(name: str, width: float, image_size: tuple[int, int], paths: int = 3) -> dict[str, float]:
    """Seconds per training step of decoder ``name`` (batch 64, channels-last, MS-SSIM loss), written out and
    fused, the better of ``paths`` alternating measurements of three steps each."""
    torch.manual_seed(0)
    hw = (image_size[0] // 4, image_size[1] // 4)
    model = build_reconstructor(name, 1, hw, image_size, width=width).to(memory_format=torch.channels_last)
    x = torch.randn(64, 1, *hw).contiguous(memory_format=torch.channels_last)
    target = torch.rand(64, 3, *image_size)
    settings = resolve_msssim(RunConfig().msssim, image_size)
    opt = torch.optim.Adam(model.parameters())

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad()
            msssim_loss(model(x), target, settings).backward()
            opt.step()
        return (time.perf_counter() - start) / n

    best = {"plain": float("inf"), "fused": float("inf")}
    for _ in range(paths):
        with plain_upsampling():
            steps(1)
            best["plain"] = min(best["plain"], steps(3))
        steps(1)
        best["fused"] = min(best["fused"], steps(3))
    return best


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a trained run without its attacks (each path judges its own copy, so neither reuses the other's
    fitted decoders)."""
    if not (dest / "train_summary.json").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(run, dest, ignore=shutil.ignore_patterns("attack", "attack.*", "judge*"))
    return dest


def judge(run: Path, attackers: list[str], budget: str, plain: bool, progress: bool) -> dict[str, Any]:
    """`deepobf attack` with ``attackers`` on ``run`` (one process, this thread count), written out or fused."""
    path = run / "attack.json"
    if path.is_file():
        return json.loads(path.read_text())
    settings = AttackSettings.from_budget(budget, attackers=attackers, repeat=[1], workers=1)
    if plain:
        with plain_upsampling():
            return run_attack(run, settings, progress=progress)
    return run_attack(run, settings, progress=progress)


def decoder_rows(attack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per decoder: MS-SSIM, its interval, epochs and fit seconds (attack.json's reconstruction records)."""
    return {name: {"ms_ssim": r["ms_ssim"], "ci": r["ms_ssim_ci95"], "epochs": r["training"]["epochs"],
                   "seconds": r["training"]["seconds"]}
            for name, r in attack["reconstruction"]["per_attacker"].items() if r.get("training")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--run", type=Path, help="a trained run (default: train a celeba-cpu Encoder in OUT/encoder)")
    p.add_argument("--data", help="CelebA root in its official layout (to train the Encoder)")
    p.add_argument("--attackers", default=",".join(DECODERS))
    p.add_argument("--budget", default="quick", choices=("quick", "full"))
    p.add_argument("--steps-only", action="store_true", help="only the per-step timings")
    p.add_argument("--no-steps", action="store_true", help="skip the per-step timings (only the two judges)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    attackers = [a for a in args.attackers.split(",") if a]

    if not args.no_steps:
        print("## One training step (batch 64, MS-SSIM loss, one thread)\n")
        print("| decoder | image | width | written out s | fused s | speed-up |")
        print("|---|---|---|---|---|---|")
    for width, size in () if args.no_steps else ((0.25, (64, 64)), (1.0, (64, 64))):
        for name in attackers:
            s = step_seconds(name, width, size)
            print(f"| {name} | {size[0]}x{size[1]} | {width} | {s['plain']:.3f} | {s['fused']:.3f} | "
                  f"{s['plain'] / s['fused']:.2f}x |", flush=True)
    if args.steps_only:
        return 0

    run = args.run
    if run is None:
        run = args.out / "encoder"
        if not (run / "train_summary.json").is_file():
            if not args.data:
                p.error("--data is needed to train the Encoder (or pass --run)")
            subprocess.run([sys.executable, "-m", "deepobfuscator.cli", "baseline", "encoder", "--preset", "celeba-cpu",
                            "--data", args.data, "--set", "train.epochs_pretrain=3", "--set", "train.epochs_attacker=0",
                            "--set", "train.epochs_adversarial=0", "--set", "train.threads=1",
                            "--out", str(run), "--no-progress",
                            *(["--resume"] if (run / "config.yaml").is_file() else [])], check=True)
    RunDir(run)  # a clear error for a folder that is not a run
    results = {}
    for path in ("plain", "fused"):
        copy = copy_run(run, args.out / f"judge-{path}")
        results[path] = decoder_rows(judge(copy, attackers, args.budget, path == "plain", not args.no_progress))

    print(f"\n## `deepobf attack` decoders, {args.budget} budget, written out against fused (run `{run.name}`)\n")
    print("| decoder | epochs written out / fused | s/epoch written out | s/epoch fused | speed-up | MS-SSIM written "
          "out [95% CI] | MS-SSIM fused [95% CI] | fused inside |")
    print("|---|---|---|---|---|---|---|---|")
    inside = 0
    for name in attackers:
        a, b = results["plain"].get(name), results["fused"].get(name)
        if not a or not b:
            print(f"| {name} | missing | | | | | | |")
            continue
        pa, pb = a["seconds"] / a["epochs"], b["seconds"] / b["epochs"]
        ok = a["ci"][0] <= b["ms_ssim"] <= a["ci"][1]
        inside += ok
        print(f"| {name} | {a['epochs']} / {b['epochs']} | {pa:.1f} | {pb:.1f} | {pa / pb:.2f}x | {a['ms_ssim']:.4f} "
              f"[{a['ci'][0]:.4f}, {a['ci'][1]:.4f}] | {b['ms_ssim']:.4f} [{b['ci'][0]:.4f}, {b['ci'][1]:.4f}] | "
              f"{'yes' if ok else 'no'} |")
    print(f"\nFused values inside the written-out path's 95% interval: {inside} of {len(attackers)}. Seconds are each "
          "job's own (one thread; other work may have shared the CPU).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
