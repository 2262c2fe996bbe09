"""Which mechanism moves the averaging limit (issue 21): `hardened` variants at celeba-cpu, screened at m = 1 and inf.

An attacker who averages unlimited queries of one image reads the noise-free mean (m = inf). Each configuration is
trained with `deepobf train --preset celeba-cpu` (Smiling intended, Male private, the shared CelebA; the default
method `hardened` plus the overrides below) and screened by `benchmarks/screen_hardened.py` (fresh ResNet and MLP
attackers on the run's test split, early stopped on its validation split, at m = 1 and m = inf; C's accuracy; the
share of the test means' variance left within the Smiling classes). The screen is not the judge: configurations
that move the limit are then judged by `deepobf attack`. Finished runs and screens are reused.

    OMP_NUM_THREADS=1 python benchmarks/averaging_limit.py --out runs/averaging --data ../shared/data/celeba
    python benchmarks/averaging_limit.py --out runs/averaging --table-only > benchmarks/results/averaging_limit_celeba_cpu.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS: dict[str, list[str]] = {
    "default": [],
    "spread10": ["method.mu_spread=10"],  # ten times the within-class spread term
    "spread10-mu3": ["method.mu_spread=10", "method.mu=3"],  # and three times the private-label term
    "bank1024": ["method.dependence_bank=1024"],  # the private-label term estimated on 1024 earlier rows too
    "critic1": ["method.mu_critic=1"],  # the conditional critic of the noise-free mean
    "critic3": ["method.mu_critic=3"],  # three times stronger
    # a critic that is never restarted and takes three updates per obfuscator step (closer to converged)
    "critic1-steady": ["method.mu_critic=1", "method.critic_restart_every=0", "method.critic_steps=3"],
    # capacity removed instead of penalised: the sent mean is one value per intended channel (a code head with 16
    # local channels), repeated over the 8x8 map; the noise is still drawn per position
    "code16": ["model.bottleneck_code=16"],
    "code16-seed1": ["model.bottleneck_code=16", "train.seed=1"],  # the same, another training seed
}
SCREEN = Path(__file__).with_name("screen_hardened.py")


def train(name: str, out: Path, data: str) -> None:
    if (out / "train_summary.json").is_file():
        return
    cmd = [sys.executable, "-m", "deepobfuscator.cli", "train", "--preset", "celeba-cpu", "--data", data,
           "--task", "Smiling", "--private", "Male", "--out", str(out), "--no-progress"]
    cmd += [x for o in CONFIGS[name] for x in ("--set", o)]
    if (out / "config.yaml").is_file():
        cmd.append("--resume")
    subprocess.run(cmd, check=True)


def screen(out: Path) -> dict:
    path = out / "screen.json"
    if not path.is_file():
        text = subprocess.run([sys.executable, str(SCREEN), str(out), "--m", "1,inf", "--attackers", "resnet,mlp"],
                              check=True, capture_output=True, text=True).stdout
        path.write_text(text.strip().splitlines()[-1])
    return json.loads(path.read_text())


def table(root: Path) -> list[str]:
    lines = ["# The averaging limit at celeba-cpu (`benchmarks/averaging_limit.py`)", "",
             "Screened (fresh ResNet and MLP on the test split; not the judge). Male balanced accuracy of the best "
             "attacker for single queries (m = 1) and for the noise-free mean (m = inf); within share: the test "
             "means' variance left within the Smiling classes.", "",
             "| config | overrides | Smiling (C, test) | within share | Male m = 1 | Male m = inf |",
             "|---|---|---|---|---|---|"]
    for name, overrides in CONFIGS.items():
        path = root / name / "screen.json"
        if not path.is_file():
            continue
        s = json.loads(path.read_text())
        lines.append(f"| {name} | {' '.join(overrides) or '(defaults)'} | {s['utility_test']:.3f} | "
                     f"{s['within_share_test']:.3f} | {s['m1']['best']:.3f} | {s['minf']['best']:.3f} |")
    return lines


JUDGES = ("judge-warm/attack.json", "judge-attr/attack.json")  # where a run's judged attribute attack was written


def judged(root: Path) -> list[str]:
    """The judge's best fresh Male attacker at m = 1, 8 and inf (with its 95% interval) for every judged run."""
    lines = ["", "## Judged (`deepobf attack` with the attackers named; learned ones warm-started at m = 8 and inf)", "",
             "| config | attackers | Smiling (C) | label / oracle floor | Male m = 1 | Male m = 8 | Male m = inf |",
             "|---|---|---|---|---|---|---|"]
    rows = 0
    for name in CONFIGS:
        path = next((root / name / j for j in JUDGES if (root / name / j).is_file()), None)
        if path is None:
            continue
        a = json.loads(path.read_text())

        def cell(entry: dict) -> str:
            ci = entry.get("balanced_accuracy_ci95") or [None, None]
            return (f"{entry['balanced_accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] ({entry['best_attacker']})"
                    if ci[0] is not None else f"{entry['balanced_accuracy']:.3f} ({entry['best_attacker']})")
        male = a["privacy"]["Male"]
        rep = a.get("repeated") or {}
        floors = f"{male['label_floor']['balanced_accuracy']:.3f} / {male['oracle_floor']['balanced_accuracy']:.3f}"
        attackers = ", ".join(a["settings"].get("attackers") or ["all"])
        lines.append(f"| {name} | {attackers} | {a['utility']['Smiling']['accuracy']:.3f} | {floors} | {cell(male)} | "
                     + " | ".join(cell(rep[m]["privacy"]["Male"]) if m in rep else "" for m in ("8", "inf")) + " |")
        rows += 1
    return lines if rows else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", help="CelebA root (to train missing runs)")
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    if not args.table_only:
        for name in args.only:
            if not (args.out / name / "train_summary.json").is_file() and not args.data:
                p.error(f"{args.out / name} is not trained; pass --data")
            train(name, args.out / name, args.data)
            screen(args.out / name)
    print("\n".join(table(args.out) + judged(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
