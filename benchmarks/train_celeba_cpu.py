"""Issue 2 benchmark: DeepObfuscator vs a plain Encoder on CelebA at the `celeba-cpu` preset.

Trains two runs on the same seeded split: with privacy (Algorithm 1, all three stages) and without
(``train.epochs_adversarial=0``: O+C trained for the task only, then AR+AC trained on its frozen
features, i.e. the Encoder baseline under the same attacks). Prints, from the held-out test split:
Smiling accuracy of both, the co-trained AC's Male accuracy against the Male majority rate, AR's
MS-SSIM, and the seconds per epoch of the adversarial stage against a plain O+C (pretrain) epoch
(goal: ratio <= 1.5). A short per-batch timing of each cycle phase against a pretrain batch follows.

    python benchmarks/train_celeba_cpu.py [--data ../shared/data/celeba] [--out DIR] [--quick]

``--quick`` (600 images, one epoch per stage) is a smoke test of this script, not a result.
Runs in --out are resumed when present, so an interrupted benchmark continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from deepobfuscator.config import RunConfig, apply_overrides, preset
from deepobfuscator.methods import train_run
from deepobfuscator.runs import RunDir
from deepobfuscator.training import make_trainer
from deepobfuscator.utils import git_commit

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT.parent / "shared" / "data" / "celeba"
QUICK = ["data.max_images=600", "train.epochs_pretrain=1", "train.epochs_attacker=1", "train.epochs_adversarial=1"]
PHASES = ("defend_reconstruction", "defend_attributes", "attackers", "classifier")


def make_config(data: Path, overrides: list[str], privacy: bool) -> RunConfig:
    """The `celeba-cpu` preset on ``data`` (Smiling intended, Male private), with or without privacy."""
    cfg = preset("celeba-cpu")
    cfg.data.root = str(data)
    cfg.data.task, cfg.data.private = ["Smiling"], ["Male"]
    cfg = apply_overrides(cfg, overrides + ([] if privacy else ["train.epochs_adversarial=0", "privacy.defend=none"]))
    cfg.name = cfg.method = "deepobfuscator" if privacy else "encoder"
    return cfg


def _settings(cfg: RunConfig) -> dict[str, Any]:
    raw = cfg.to_dict()
    return {k: raw[k] for k in ("method", "model", "msssim", "privacy", "train")} | {
        "data": {k: v for k, v in raw["data"].items() if k not in ("root", "cache_dir")}}


def run(cfg: RunConfig, out: Path, progress: bool) -> dict[str, Any]:
    """Train (or resume, or just re-summarise) one run."""
    resume = (out / "config.yaml").is_file()
    if resume and _settings(RunDir(out).read_config()) != _settings(cfg):
        raise SystemExit(f"{out} holds a run with other settings (e.g. --quick vs full); choose another --out")
    started = time.perf_counter()
    summary = train_run(cfg, out, resume=resume, progress=progress)
    summary["wall_seconds"] = time.perf_counter() - started
    return summary


def phase_timing(cfg: RunConfig, batches: int, rounds: int) -> dict[str, dict[str, float]]:
    """Seconds per batch of each cycle phase and of a pretrain batch (min and median over ``rounds``)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg, Path(tmp) / "run", progress=False)
        loader = trainer.data.loader("train", cfg.train.batch_size, shuffle=True, seed=0, drop_last=True)
        data = [b for _, b in zip(range(batches), loader.epoch(0))]
        steps = {
            "pretrain": lambda b: trainer.step_pretrain(b, 0),
            "defend_reconstruction": trainer.step_defend_reconstruction,
            "defend_attributes": trainer.step_defend_attributes,
            "attackers": trainer.step_attackers,
            "classifier": trainer.step_classifier,
        }
        times: dict[str, list[float]] = {k: [] for k in steps}
        for fn in steps.values():  # warm-up
            fn(data[0])
        for r in range(rounds):  # interleaved, so load changes hit every phase alike
            for name, fn in steps.items():
                batch = data[r % len(data)]
                start = time.perf_counter()
                fn(batch)
                times[name].append(time.perf_counter() - start)
    return {k: {"min": min(v), "median": statistics.median(v)} for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"CelebA root (default {DEFAULT_DATA})")
    p.add_argument("--out", type=Path, help="directory for the two runs (default: a new temporary directory)")
    p.add_argument("--quick", action="store_true", help="smoke test: 600 images, one epoch per stage")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for both runs (repeatable)")
    p.add_argument("--phase-rounds", type=int, default=3, help="rounds of the per-phase timing (0 to skip)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    args = p.parse_args(argv)

    overrides = (QUICK if args.quick else []) + args.overrides
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-train-celeba-cpu-"))
    configs = {name: make_config(args.data.expanduser().resolve(), overrides, privacy=name == "deepobfuscator")
               for name in ("deepobfuscator", "encoder")}
    summaries = {name: run(cfg, out / name, args.progress) for name, cfg in configs.items()}

    dobf, enc = summaries["deepobfuscator"], summaries["encoder"]
    cfg = configs["deepobfuscator"]
    spe = dobf["seconds_per_epoch"]
    ratio = spe["adversarial"] / spe["pretrain"]
    result: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "commit": git_commit(),
        "mode": "quick (smoke test, not a result)" if args.quick else "full",
        "runs": str(out),
        "threads": torch.get_num_threads(),
        "seeds": {"train": cfg.train.seed, "split": cfg.data.split_seed, "noise": cfg.privacy.noise_seed},
        "test_images": dobf["test_images"],
        "smiling_accuracy": {"deepobfuscator": dobf["test"]["C_acc"]["Smiling"],
                             "encoder": enc["test"]["C_acc"]["Smiling"]},
        "smiling_majority_rate": dobf["majority_rate"]["Smiling"],
        "male_accuracy_of_AC": {"deepobfuscator (co-trained)": dobf["test"]["AC_acc"]["Male"],
                                "encoder (trained on frozen O)": enc["test"]["AC_acc"]["Male"]},
        "male_majority_rate": dobf["majority_rate"]["Male"],
        "AR_msssim": {"deepobfuscator (co-trained)": dobf["test"]["AR_msssim"],
                      "encoder (trained on frozen O)": enc["test"]["AR_msssim"]},
        "seconds_per_epoch": {"pretrain (O+C)": spe["pretrain"], "adversarial": spe["adversarial"],
                              "ratio": ratio, "goal": "<= 1.5", "met": ratio <= 1.5},
    }
    if args.phase_rounds > 0:
        timing = phase_timing(cfg, batches=3, rounds=args.phase_rounds)
        pre = timing["pretrain"]["min"]
        cycle = statistics.mean(timing[k]["min"] for k in PHASES)
        result["seconds_per_batch"] = {
            **{k: round(v["min"], 4) for k, v in timing.items()},
            "cycle_mean": round(cycle, 4),
            "cycle_over_pretrain": round(cycle / pre, 3),
            "note": f"min over {args.phase_rounds} interleaved rounds, batch {cfg.train.batch_size}, "
                    f"{cfg.data.image_size[0]}x{cfg.data.image_size[1]} px, width {cfg.model.width}",
        }
    print(json.dumps(result, indent=2))
    print(f"\nSmiling accuracy: DeepObfuscator {result['smiling_accuracy']['deepobfuscator']:.3f}, "
          f"Encoder {result['smiling_accuracy']['encoder']:.3f}")
    print(f"Male accuracy of the co-trained AC: {dobf['test']['AC_acc']['Male']:.3f} "
          f"(majority rate {result['male_majority_rate']:.3f}; Encoder attacker {enc['test']['AC_acc']['Male']:.3f})")
    print(f"AR MS-SSIM: DeepObfuscator {dobf['test']['AR_msssim']:.3f}, Encoder {enc['test']['AR_msssim']:.3f}")
    print(f"seconds/epoch: adversarial {spe['adversarial']:.1f} vs pretrain {spe['pretrain']:.1f} "
          f"-> ratio {ratio:.2f} (goal <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
