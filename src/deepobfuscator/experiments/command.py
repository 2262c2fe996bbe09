"""`deepobf baseline NAME` and `deepobf sweep FILE.yaml`: parse, call the library, print."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..methods import METHODS, configure, train_run
from ..options import add_run_options, build_config, default_out
from .cache import PretrainCache
from .sweep import load_sweep, run_sweep


def cmd_baseline(args: argparse.Namespace) -> int:
    """Train one run of a registered method (baseline or DeepObfuscator)."""
    if not args.name:
        for name in sorted(METHODS):
            method = METHODS.get(name)
            params = ", ".join(f"{k}={v}" for k, v in method.defaults.items())
            print(f"{name:15s} {method.summary}" + (f"  [{params}]" if params else ""))
        return 0
    cfg = build_config(args, method=args.name)
    for key in ("epsilon", "sigma", "weight"):
        if getattr(args, key) is not None:
            cfg.baseline[key] = getattr(args, key)
    cfg = configure(cfg, args.name)
    out = default_out(args, args.name)
    summary = train_run(cfg, out, resume=args.resume, progress=not args.no_progress,
                        cache=PretrainCache(Path(args.pretrain_cache)) if args.pretrain_cache else None)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {out}  (evaluate it with: deepobf attack {out})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train and attack every run of a sweep file; exit 1 if any run failed."""
    sweep = load_sweep(Path(args.file))
    if args.list:
        for spec in sweep.runs:
            print(spec.name)
        return 0

    def on_event(name: str, event: str, detail: str) -> None:
        print(f"[sweep] {name}: {event} {detail}", file=sys.stderr if event == "failed" else sys.stdout, flush=True)

    status = run_sweep(sweep, out=Path(args.out) if args.out else None, progress=not args.no_progress,
                       only=args.only or None, on_event=on_event)
    runs: dict[str, Any] = status["runs"]
    chosen = [s.name for s in sweep.runs if not args.only or s.name in args.only]
    failed = [n for n in chosen if runs.get(n, {}).get("status") == "failed"]
    print(f"sweep: {len(chosen) - len(failed)} done, {len(failed)} failed; status in {status['out']}/sweep_status.json")
    for name in failed:
        print(f"  failed: {name}: {runs[name]['error']}", file=sys.stderr)
    return 1 if failed else 0


def register_cli(subparsers: Any) -> None:
    """Add `baseline` and `sweep`."""
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

    p = subparsers.add_parser("sweep", help="train and attack a grid of runs from a YAML file (resumable)")
    p.add_argument("file", help="sweep file (see docs/baselines.md)")
    p.add_argument("--out", help="output folder (default: the file's 'out', else runs/<file stem>)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these runs of the sweep")
    p.add_argument("--list", action="store_true", help="print the expanded run names and exit")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=cmd_sweep)
