"""`deepobf baseline NAME`, `deepobf sweep FILE.yaml` and `deepobf tune`: parse, call the library, print."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from ..methods import METHODS, configure, train_run
from ..options import add_run_options, apply_run_options, build_config, default_out, refuse_changed_resume
from ..training import format_summary
from .cache import PretrainCache
from .sweep import load_sweep, run_sweep
from .tune import SAMPLERS, run_tune


def cmd_baseline(args: argparse.Namespace) -> int:
    """Train one run of a registered method (baseline or DeepObfuscator)."""
    if not args.name:
        for name in sorted(METHODS):
            method = METHODS.get(name)
            params = ", ".join(f"{k}={v}" for k, v in method.defaults.items())
            print(f"{name:15s} {method.summary}" + (f"  [{params}]" if params else ""))
        return 0
    cfg = configure(build_config(args, method=args.name), args.name)
    out = default_out(args, args.name)
    refuse_changed_resume(args, out, lambda recorded: apply_run_options(recorded, args, args.name))
    summary = train_run(cfg, out, resume=args.resume, progress=not args.no_progress,
                        cache=PretrainCache(Path(args.pretrain_cache)) if args.pretrain_cache else None)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary, out))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train and attack every run of a sweep file as trials of an Optuna study; exit 1 if any run failed."""
    sweep = load_sweep(Path(args.file))
    if args.list:
        for spec in sweep.runs:
            print(spec.name)
        return 0

    def on_event(name: str, event: str, detail: str) -> None:
        print(f"[sweep] {name}: {event} {detail}", file=sys.stderr if event == "failed" else sys.stdout, flush=True)

    outcome = run_sweep(sweep, out=Path(args.out) if args.out else None, progress=not args.no_progress,
                        only=args.only or None, on_event=on_event, storage=args.storage, workers=args.workers,
                        study=args.study)
    counts: dict[str, int] = {}
    for entry in outcome.runs.values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    in_folder = sum(bool(entry.get("finished_in_folder")) for entry in outcome.runs.values())
    note = f" ({in_folder} of them finished in the folder: read back, not trained, when run)" if in_folder else ""
    print("sweep: " + ", ".join(f"{n} {status}" + (note if status == "pending" else "")
                                for status, n in sorted(counts.items()))
          + f"; study '{outcome.study}' in {outcome.storage}")
    for name, entry in outcome.runs.items():
        if entry["status"] == "failed":
            print(f"  failed: {name}: {entry.get('error')} (retried by the next call)", file=sys.stderr)
    if outcome.storage.startswith("sqlite:///"):
        print(f"live view: optuna-dashboard {outcome.storage}")
    print(f"compare: deepobf report {outcome.out} --out {outcome.out}/report")
    return 1 if counts.get("failed") else 0


def _key_values(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_tune(args: argparse.Namespace) -> int:
    """Search a method's declared parameter ranges for the utility-privacy front of the given attributes."""
    cfg = build_config(args, method=args.method)
    out = Path(args.out) if args.out else Path("runs") / f"tune-{args.preset}-{args.method}"

    def on_event(trial: str, event: str) -> None:
        print(f"[tune] {trial}: {event}", flush=True)

    outcome = run_tune(cfg, out, args.trials, storage=args.storage, study=args.study, sampler_name=args.sampler,
                       attack=_key_values(args.attack), final_judge=not args.no_final_judge,
                       progress=not args.no_progress, on_event=on_event)
    print(f"\n{outcome.trials} trial(s) in study '{outcome.study}' ({outcome.storage}); Pareto front "
          "(intended accuracy up, leakage above the floor down):")
    for p in outcome.front:
        params = ", ".join(f"{k.removeprefix('method.')}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in p.params.items())
        print(f"  trial {p.trial}: accuracy {p.intended_accuracy:.3f}, leakage {p.leakage_above_floor:+.3f} "
              f"({p.judge} judge)  {params}  {p.run}")
    print(f"draw it: deepobf report --storage {outcome.storage} --study {outcome.study} --out {out}/report")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `baseline`, `sweep` and `tune`."""
    p = subparsers.add_parser("baseline", help=f"train a run of a registered defence ({', '.join(METHODS)}); "
                                               "no NAME lists them")
    p.add_argument("name", nargs="?", choices=sorted(METHODS), metavar="NAME",
                   help=f"one of: {', '.join(sorted(METHODS))}")
    add_run_options(p)
    p.add_argument("--epsilon", type=float, help="dp/hybrid: privacy budget (sets baseline.epsilon)")
    p.add_argument("--sigma", type=float, help="noisy: Gaussian std in 0-255 pixel units (sets baseline.sigma)")
    p.add_argument("--weight", type=float, help="nopeek: weight of the distance correlation (sets baseline.weight)")
    p.add_argument("--defend", choices=["both", "reconstruction", "attributes", "none"],
                   help="deepobfuscator/pan: which attacks to defend against (section 4.2 ablations)")
    p.add_argument("--pretrain-cache", metavar="DIR",
                   help="share identical first stages between runs through this folder")
    p.set_defaults(handler=cmd_baseline)

    p = subparsers.add_parser("sweep", help="train and attack a grid of runs from a YAML file (an Optuna study; "
                                            "resumable, shareable between workers and machines)")
    p.add_argument("file", help="sweep file (see docs/baselines.md)")
    p.add_argument("--out", help="output folder (default: the file's 'out', else runs/<file stem>)")
    p.add_argument("--storage", help="study storage URL (default: sqlite:///OUT/study.db); e.g. "
                                     "postgresql://user:pass@host/db to share the grid between machines, or "
                                     "journal:PATH for a journal file on a shared filesystem")
    p.add_argument("--study", help="study name (default: sweep-<file stem>, or sweep-<file stem>-<grid digest> "
                                     "once the file's grid changed)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine, CPU threads split between them (default 1)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these runs of the sweep")
    p.add_argument("--list", action="store_true", help="print the expanded run names and exit")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=cmd_sweep)

    p = subparsers.add_parser("tune", help="search a defence's parameters for the utility-privacy front of your "
                                           "attributes (multi-objective Optuna study)")
    add_run_options(p)
    p.add_argument("--method", default="hardened", choices=sorted(METHODS),
                   help="the defence to tune (its declared ranges: deepobf train --method-help NAME)")
    p.add_argument("--trials", type=int, default=12, help="trials to finish (a rerun continues the study)")
    p.add_argument("--storage", help="study storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name (default: tune-METHOD-TASK-vs-PRIVATE)")
    p.add_argument("--sampler", default="tpe", choices=list(SAMPLERS), help="multi-objective sampler (default tpe)")
    p.add_argument("--attack", action="append", default=[], metavar="KEY=VALUE",
                   help="attack option for the judge of every trial, e.g. attackers=[linear,mirror] (repeatable)")
    p.add_argument("--no-final-judge", action="store_true",
                   help="skip the full-budget judge of the front points (their quick-budget numbers are shown)")
    p.set_defaults(handler=cmd_tune)
