"""State Farm at the `statefarm-cpu` preset: behaviour (intended, 10-way) vs driver (private, 26-way) accuracy,
with DeepObfuscator (privacy.defend=both) and without it (privacy.defend=none: O trained for behaviour only).

    python benchmarks/statefarm_cpu.py                      # full preset (about 3 min per run on 2 CPU threads)
    python benchmarks/statefarm_cpu.py --quick              # smoke test: 400 images, one epoch per stage
    python benchmarks/statefarm_cpu.py --data ROOT --out runs/bench-statefarm --threads 4

Reports, on the held-out test split: C's behaviour accuracy, the co-trained adversary's driver accuracy,
and, when `deepobfuscator.attacks` is available, driver accuracy of attackers trained from scratch on the
frozen features (the honest privacy number) with the MS-SSIM of a fresh mirror reconstructor. Chance and
majority rates are printed beside them. Results go to OUT/statefarm_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "statefarm"
VARIANTS = {"no defence": "none", "DeepObfuscator": "both"}


def train_variant(name: str, defend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run of the preset with ``privacy.defend = defend``; attack it if the attack suite exists."""
    from deepobfuscator.config import preset
    from deepobfuscator.methods import train_run

    cfg = preset("statefarm-cpu")
    cfg.data.root = str(Path(args.data).resolve())
    cfg.privacy.defend = defend
    cfg.train.threads = args.threads
    cfg.train.device = args.device
    cfg.train.seed = args.seed
    if args.quick:
        cfg.data.max_images = 400
        cfg.train.epochs_pretrain = cfg.train.epochs_attacker = cfg.train.epochs_adversarial = 1
    out = Path(args.out) / f"statefarm-cpu-{defend}"
    if out.exists() and args.fresh:
        shutil.rmtree(out)
    summary = train_run(cfg, out, resume=out.exists(), progress=not args.no_progress)
    row: dict[str, Any] = {
        "variant": name, "defend": defend, "run": str(out), "test_images": summary["test_images"],
        "behaviour_acc": summary["test"]["C_acc"]["behaviour"],
        "driver_acc_cotrained": summary["test"].get("AC_acc", {}).get("driver"),
        "majority": summary["majority_rate"],
    }
    try:
        from deepobfuscator.attacks import AttackSettings, run_attack
    except ImportError:
        return row
    settings = AttackSettings(attackers=["linear"] if args.quick else ["vgg", "linear", "mirror"],
                              attr_epochs=1 if args.quick else 3, recon_epochs=1 if args.quick else 3,
                              reid_images=20 if args.quick else 100, bootstrap=50 if args.quick else 500,
                              device=args.device)
    attack = run_attack(out, settings, progress=not args.no_progress)
    driver = attack["privacy"].get("driver", {})
    row["driver_acc_fresh"] = driver.get("accuracy")
    row["driver_fresh_attacker"] = driver.get("best_attacker")
    row["driver_acc_fresh_per_attacker"] = {k: v.get("accuracy") for k, v in driver.get("per_attacker", {}).items()}
    row["recon_msssim_fresh"] = attack["reconstruction"].get("ms_ssim")
    return row


def fmt(value: Any) -> str:
    """A table cell."""
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> int:
    """Train both variants, print a Markdown table and write OUT/statefarm_cpu.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="State Farm root (default: %(default)s)")
    parser.add_argument("--out", default="runs/bench-statefarm", help="where the runs go (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="400 images, one epoch per stage (smoke test)")
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs in --out instead of resuming them")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.out = str(Path(args.out) / "quick")

    rows = [train_variant(name, defend, args) for name, defend in VARIANTS.items()]
    majority = rows[0]["majority"]
    print(f"\nState Farm, statefarm-cpu preset{' (QUICK: 400 images, 1 epoch per stage)' if args.quick else ''}, "
          f"test split of {rows[0]['test_images']} images")
    print(f"chance: behaviour 1/10 = 0.100, driver 1/26 = {1 / 26:.3f}; majority: behaviour "
          f"{majority['behaviour']:.3f}, driver {majority['driver']:.3f}\n")
    print("| variant | behaviour acc (C) | driver acc (co-trained AC) | driver acc (fresh attackers, best) "
          "| recon MS-SSIM (fresh mirror) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {fmt(r['behaviour_acc'])} | {fmt(r['driver_acc_cotrained'])} | "
              f"{fmt(r.get('driver_acc_fresh'))} ({r.get('driver_fresh_attacker') or '-'}) | "
              f"{fmt(r.get('recon_msssim_fresh'))} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = {"quick": args.quick, "chance": {"behaviour": 0.1, "driver": 1 / 26}, "rows": rows}
    (Path(args.out) / "statefarm_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {Path(args.out) / 'statefarm_cpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
