"""Seconds per epoch of `deepobf train --paper --preset demo` (the paper's three stages) with 1 and 2 CPU
processes (torchrun, gloo).

    python benchmarks/distributed_demo.py --data /path/to/celeba            # demo preset, one epoch per stage
    python benchmarks/distributed_demo.py --data /path/to/celeba --quick    # smoke: 384 images
    python benchmarks/distributed_demo.py --configs 1x1,1x2,2x1             # PROCESSESxTHREADS each

Each configuration ``PxT`` runs under ``torchrun --standalone --nproc_per_node P`` with ``T`` torch
threads per process; the default compares one process using every core with two processes sharing
them. Seconds per epoch are the training-loop times that rank 0 records in ``metrics.jsonl``
(validation and caching excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(procs: int, threads: int, data: str | None, out: Path, overrides: list[str]) -> dict:
    """Train the demo preset with ``procs`` processes of ``threads`` threads; return seconds per epoch by stage."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           "-m", "deepobfuscator.cli", "train", "--paper", "--preset", "demo", "--out", str(out), "--no-progress",
           "--set", f"train.threads={threads}"]
    cmd += ["--data", data] if data else []
    for item in overrides:
        cmd += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{proc.stderr[-4000:]}")
    per_stage: dict[str, list[float]] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        per_stage.setdefault(rec["stage"], []).append(rec["seconds"])
    return {"procs": procs, "threads": threads, "wall_seconds": wall,
            "seconds_per_epoch": {k: sum(v) / len(v) for k, v in per_stage.items()}}


def main() -> int:
    """Parse options, run each process count, print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("DEEPOBF_DATA"),
                        help="CelebA root (default: $DEEPOBF_DATA, else the embedded synthetic faces)")
    cores = os.cpu_count() or 1
    parser.add_argument("--configs", default=f"1x{cores},2x{max(1, cores // 2)}",
                        help="PROCESSESxTHREADS configurations to compare, comma-separated (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="384 images instead of the preset's 3000 (smoke test)")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()

    overrides = ["train.epochs_pretrain=1", "train.epochs_attacker=1", "train.epochs_adversarial=1"]
    if args.quick:
        overrides.append("data.max_images=384")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.workdir or tmp)
        results = []
        for item in args.configs.split(","):
            procs, threads = (int(v) for v in item.lower().split("x"))
            out = base / f"demo-{procs}x{threads}-{int(time.time())}"
            results.append(run_one(procs, threads, args.data, out, overrides))
    stages = list(results[0]["seconds_per_epoch"])
    print(f"demo preset{' (--quick)' if args.quick else ''}: seconds per epoch (rank 0's training loop)")
    labels = [f"{r['procs']} proc x {r['threads']} thr" for r in results]
    print(f"{'stage':12s}" + "".join(f"{label:>18s}" for label in labels))
    for stage in stages:
        print(f"{stage:12s}" + "".join(f"{r['seconds_per_epoch'][stage]:18.2f}" for r in results))
    print(f"{'wall (all)':12s}" + "".join(f"{r['wall_seconds']:18.1f}" for r in results))
    print(json.dumps({"quick": args.quick, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
