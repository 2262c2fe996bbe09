"""`deepobf report RUN_DIR... --out DIR`: parse, call the library, print."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def cmd_report(args: argparse.Namespace) -> int:
    """Write the comparison report of the given runs."""
    from ..experiments import load_study, trial_runs
    from .html import build_report

    runs = [Path(p) for p in args.runs]
    if args.storage:
        study = load_study(args.storage, args.study)
        found = trial_runs(study)
        print(f"study '{study.study_name}': {len(found)} finished trial run(s)")
        runs += found
    elif args.study:
        raise ValueError("--study needs --storage URL (e.g. sqlite:///runs/sweep/study.db)")
    if not runs:
        raise ValueError("nothing to report: give run directories and/or --storage URL [--study NAME]")
    files = build_report(runs, Path(args.out), title=args.title, margin=args.margin)
    for warning in files.warnings:
        print(f"deepobf report: warning: {warning}", file=sys.stderr)
    print(f"report of {files.runs} run(s): {files.html} (self-contained), {files.markdown}, {files.summary}")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `report`."""
    p = subparsers.add_parser("report", help="HTML + Markdown comparison of attacked runs (tradeoff, λ1, "
                                             "reconstruction, ablation, image grids)")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run directories (a folder of runs, e.g. a sweep's output, stands for all of them)")
    p.add_argument("--storage", help="also report the finished trials of a study (sweep or tune) in this storage, "
                                     "e.g. sqlite:///runs/sweep/study.db")
    p.add_argument("--study", help="the study's name (needed when the storage holds several)")
    p.add_argument("--out", required=True, help="folder for report.html, report.md, report.json and figures")
    p.add_argument("--margin", type=float, default=0.03,
                   help="best tradeoff: only runs whose intended accuracy is within this of the Encoder's "
                        "(default 0.03 = 3 points)")
    p.add_argument("--title", default="DeepObfuscator: utility-privacy comparison", help="report title")
    p.set_defaults(handler=cmd_report)
