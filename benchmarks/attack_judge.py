"""The stronger judge (issue 12) on trained runs: re-attack them with the new suite and print what it found.

    # train the two runs once (a few minutes each at celeba-cpu)
    deepobf baseline encoder --preset celeba-cpu --data ../shared/data/celeba --task Smiling --private Male --out R/enc
    deepobf train --paper --preset celeba-cpu --data ../shared/data/celeba --task Smiling --private Male \\
        --set privacy.lambda1=10 --out R/dobf10
    # today's suite on the same run, for the wall-time comparison (an older checkout's `deepobf attack`):
    deepobf attack R/enc --out R/enc_v1/attack.json
    # the new suite (writes RUN/attack_v2.json) and the summary
    OMP_NUM_THREADS=1 python benchmarks/attack_judge.py R/enc R/dobf10 --old R/enc_v1/attack.json R/dobf10_v1/attack.json

Prints, per run: the epochs each learned attacker needed (and its best epoch) under early stopping, the best
attacker's balanced accuracy on each private attribute, overall and within each intended class, beside the
majority rate and the label and oracle floors; the best MS-SSIM with and without the refined inversion, the
constant-image floors, and the attack wall time of the old suite (``--old``) and the new one. Every number
is read from the attack.json files the suites wrote.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def attack(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The new suite's attack.json of ``run`` (computed unless --print-only; resumes finished attackers)."""
    out = run / "attack_v2.json"
    if args.print_only:
        return json.loads(out.read_text())
    import torch

    from deepobfuscator.attacks import AttackSettings, run_attack

    torch.set_num_threads(args.threads)
    settings = AttackSettings(seeds=args.seeds, seed=args.seeds[0] if args.seeds else 0, attackers=args.attackers,
                              max_train_images=args.max_train_images)
    if args.epochs is not None:
        settings.recon_epochs = settings.attr_epochs = args.epochs
    return run_attack(run, settings, out=out, progress=not args.no_progress)


def summary(result: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    """The lines the issue asks for, from one new attack.json (and the old suite's, for time and MS-SSIM)."""
    lines = [f"## {result['run']} ({result['method']}), {result['eval_images']} evaluation images, "
             f"features {result.get('feature_shape')}, stochastic={result.get('stochastic')}"]
    for attr, e in result["utility"].items():
        lines.append(f"utility {attr}: accuracy {_f(e['accuracy'])} (majority {_f(e['majority_rate'])}), "
                     f"balanced {_f(e['balanced_accuracy'])}")
    lines.append("epochs under early stopping (run / best / max):")
    for attr, e in result["privacy"].items():
        for name, r in e["per_attacker"].items():
            t = r.get("training") or {}
            lines.append(f"  {attr} {name}: {t.get('epochs')} / {t.get('best_epoch')} / {t.get('max_epochs')}"
                         f"  ({_f(t.get('seconds'), 0)} s)")
    for name, r in result["reconstruction"]["per_attacker"].items():
        t = r.get("training") or {}
        if "curve" in t:
            lines.append(f"  reconstruction {name}: {t.get('epochs')} / {t.get('best_epoch')} / {t.get('max_epochs')}"
                         f"  ({_f(t.get('seconds'), 0)} s)")
    for attr, e in result["privacy"].items():
        label, oracle = e.get("label_floor") or {}, e.get("oracle_floor") or {}
        lines.append(f"{attr}: best {e['best_attacker']} balanced accuracy {_f(e['balanced_accuracy'])} "
                     f"{e.get('balanced_accuracy_ci95')} (majority rate {_f(e['majority_rate'])}); label floor "
                     f"{_f(label.get('balanced_accuracy'))}, oracle floor {_f(oracle.get('balanced_accuracy'))}; "
                     f"leakage above oracle {_f(e.get('leakage_above_oracle'))}")
        for task, classes in (e.get("within") or {}).items():
            for cls, v in classes.items():
                lines.append(f"  within {task}={cls}: balanced accuracy {_f(v['balanced_accuracy'])} "
                             f"(majority {_f(v['majority_rate'])}, n={v['n']})")
        if old:
            o = old.get("privacy", {}).get(attr, {})
            lines.append(f"  old suite: best {o.get('best_attacker')} balanced accuracy {_f(o.get('balanced_accuracy'))}")
    rec = result["reconstruction"]
    per = rec["per_attacker"]
    learned = {n: r for n, r in per.items() if not r.get("floor") and n != "inversion"}
    best_learned = max(learned, key=lambda n: learned[n]["ms_ssim"] or -1) if learned else None
    inv = per.get("inversion", {})
    lines.append(f"reconstruction: best learned {best_learned} MS-SSIM {_f(learned.get(best_learned, {}).get('ms_ssim'))} "
                 f"(all {len(next(iter(learned.values()))['seeds']['values']) if learned else 0} seed(s)); "
                 f"refined inversion {_f(inv.get('ms_ssim'))} on {inv.get('n')} images (start {inv.get('start')}, "
                 f"{inv.get('steps')} steps; the start scored {_f(inv.get('start_ms_ssim'))} on them)")
    lines.append(f"  best overall (inversion included): {rec['best_attacker']} MS-SSIM {_f(rec['ms_ssim'])}; "
                 f"above the constant-image floor by {_f(rec.get('ms_ssim_above_floor'))}")
    for name in ("constant", "mean_face", "median_face"):
        if name in per:
            lines.append(f"  floor {name}: MS-SSIM {_f(per[name]['ms_ssim'])}, PSNR {_f(per[name]['psnr'], 2)}")
    reid = result["reid"]
    lines.append(f"re-ID same image {_f(reid['same_image'])} ({reid['same_image_attacker']}; best floor "
                 f"{_f(reid.get('same_image_floor'))}), same person {_f(reid['same_person'])} (chance 0.25)")
    if old:
        o = old["reconstruction"]
        lines.append(f"old suite: best MS-SSIM {_f(o['ms_ssim'])} ({o['best_attacker']}), inversion "
                     f"{_f(o['per_attacker'].get('inversion', {}).get('ms_ssim'))}")
        lines.append(f"attack wall time: old {old['seconds']:.0f} s, new {result['seconds']:.0f} s "
                     "(new: resumed attackers count only their loading time)")
    else:
        lines.append(f"attack wall time: new {result['seconds']:.0f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Attack the runs and print the summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="trained run directories")
    p.add_argument("--old", nargs="*", type=Path, default=[], help="the old suite's attack.json, one per run")
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], help="attacker seeds (default 0)")
    p.add_argument("--epochs", type=int, help="cap on every learned attacker's epochs")
    p.add_argument("--attackers", type=lambda s: s.split(","), help="subset of attackers (default: all)")
    p.add_argument("--max-train-images", type=int, help="attackers train on a seeded subset of this many images")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--print-only", action="store_true", help="read RUN/attack_v2.json instead of attacking")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.old and len(args.old) != len(args.runs):
        p.error("--old needs one attack.json per run")
    for i, run in enumerate(args.runs):
        result = attack(run, args)
        old = json.loads(args.old[i].read_text()) if args.old else None
        print("\n".join(summary(result, old)), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
