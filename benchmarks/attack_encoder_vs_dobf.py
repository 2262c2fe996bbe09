"""Honest privacy on CelebA at the `celeba-cpu` preset: a plain Encoder (no privacy) vs DeepObfuscator.

Both runs share the preset, data, split and seed; the Encoder is the trainer with
``train.epochs_adversarial=0`` and ``privacy.defend=none`` (stage 1 and stage 2 only, so O is trained for
Smiling alone). Each run is then attacked by every attacker of `deepobf attack`, trained from scratch on
the frozen train-split features and scored on the test split.

    python benchmarks/attack_encoder_vs_dobf.py --quick            # smoke test (minutes on 1 CPU thread)
    python benchmarks/attack_encoder_vs_dobf.py --seeds 0,1,2      # the benchmark (hours on a CPU)
    python benchmarks/attack_encoder_vs_dobf.py --data ROOT --out runs/bench-attack --threads 4

Prints, per method and seed: Smiling accuracy of the deployed C (with its majority rate), the best
attacker's Male balanced accuracy (attacker named; chance 0.5, majority rate beside it), the best
reconstruction MS-SSIM and PSNR, and the re-identification rates (chance 0.25). Runs and attacks are
resumable; results go to OUT/attack_encoder_vs_dobf.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba"
METHODS = {"encoder": ["train.epochs_adversarial=0", "privacy.defend=none"], "deepobfuscator": []}
QUICK_OVERRIDES = ["data.max_images=400", "data.image_size=[32, 32]", "model.width=0.0625", "model.fc_width=32",
                   "train.batch_size=32", "train.epochs_pretrain=1", "train.epochs_attacker=1"]


def run_config(method: str, seed: int, args: argparse.Namespace) -> Any:
    """The celeba-cpu preset for ``method`` (encoder or deepobfuscator) at ``seed``."""
    from deepobfuscator.config import apply_overrides, preset

    cfg = preset("celeba-cpu")
    cfg.data.root = str(Path(args.data).resolve())
    cfg.data.task, cfg.data.private = ["Smiling"], ["Male"]
    overrides = list(QUICK_OVERRIDES) if args.quick else []
    if args.quick and method == "deepobfuscator":
        overrides.append("train.epochs_adversarial=1")
    cfg = apply_overrides(cfg, overrides + METHODS[method] + [f"train.seed={seed}", f"train.device={args.device}"])
    cfg.method, cfg.name = method, f"celeba-cpu-{method}-s{seed}"
    cfg.train.threads = args.threads
    return cfg


def attack_settings(args: argparse.Namespace) -> Any:
    """Attack budgets: the suite's defaults, or tiny ones with --quick."""
    from deepobfuscator.attacks import AttackSettings

    if args.quick:
        return AttackSettings(recon_epochs=1, attr_epochs=1, batch_size=32, inversion_images=4, inversion_steps=20,
                              reid_images=20, grid_images=6, bootstrap=50, seed=args.attack_seed, device=args.device)
    caps = {} if args.attack_epochs is None else {"recon_epochs": args.attack_epochs, "attr_epochs": args.attack_epochs}
    return AttackSettings(**caps, seed=args.attack_seed,
                          device=args.device)


def evaluate(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) one run, attack it, and return its comparison row."""
    from deepobfuscator.attacks import run_attack
    from deepobfuscator.methods import train_run

    out = Path(args.out) / f"celeba-cpu-{method}-s{seed}"
    train_run(run_config(method, seed, args), out, resume=out.exists(), progress=not args.no_progress)
    result = run_attack(out, attack_settings(args), progress=not args.no_progress)
    smiling, male = result["utility"].get("Smiling", {}), result["privacy"].get("Male", {})
    rec, reid = result["reconstruction"], result["reid"]
    return {
        "method": method, "seed": seed, "attack_seed": args.attack_seed, "run": str(out),
        "test_images": result["eval_images"],
        "smiling_acc": smiling.get("accuracy"), "smiling_acc_ci95": smiling.get("accuracy_ci95"),
        "smiling_majority": smiling.get("majority_rate"),
        "male_best_attacker": male.get("best_attacker"), "male_bal_acc": male.get("balanced_accuracy"),
        "male_bal_acc_ci95": male.get("balanced_accuracy_ci95"), "male_acc": male.get("accuracy"),
        "male_majority": male.get("majority_rate"),
        "best_reconstructor": rec["best_attacker"], "ms_ssim": rec["ms_ssim"], "psnr": rec["psnr"],
        "best_psnr": rec["best_psnr"],
        "reid_same_image": reid["same_image"], "reid_same_person": reid["same_person"],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The comparison as a Markdown table."""
    header = ["method", "seed", "Smiling acc (majority)", "Male bal. acc [95% CI] (best attacker; chance 0.5)",
              "Male acc (majority)", "MS-SSIM (best)", "PSNR dB", "re-ID same image", "re-ID same person"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        ci = r["male_bal_acc_ci95"] or [None, None]
        cells = [r["method"], str(r["seed"]), f"{_fmt(r['smiling_acc'])} ({_fmt(r['smiling_majority'])})",
                 f"{_fmt(r['male_bal_acc'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] ({r['male_best_attacker']})",
                 f"{_fmt(r['male_acc'])} ({_fmt(r['male_majority'])})",
                 f"{_fmt(r['ms_ssim'])} ({r['best_reconstructor']})", _fmt(r["psnr"], 2),
                 _fmt(r["reid_same_image"]), _fmt(r["reid_same_person"])]
        print("| " + " | ".join(cells) + " |")
    print("\nre-ID chance level: 0.25 (one of four candidates)")


def main(argv: list[str] | None = None) -> int:
    """Train, attack and compare; write OUT/attack_encoder_vs_dobf.json."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CelebA root (official layout)")
    p.add_argument("--out", default="runs/bench-attack", help="directory for the runs and the summary")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--attack-seed", type=int, default=0)
    p.add_argument("--attack-epochs", type=int,
                   help="cap on the epochs of every learned attacker (full mode; default: the suite's early stopping)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke test: 400 images at 32x32, one epoch per stage")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.quick and args.out == "runs/bench-attack":
        args.out = "runs/bench-attack-quick"
    rows = [evaluate(method, int(seed), args) for seed in args.seeds.split(",") for method in METHODS]
    print_table(rows)
    out = Path(args.out) / "attack_encoder_vs_dobf.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": "celeba-cpu", "quick": args.quick, "data": args.data, "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
