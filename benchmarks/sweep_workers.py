"""A grid of 8 `demo` runs with 1 and 2 sweep workers on SQLite, and 2 workers on PostgreSQL: wall time and CPU use.

    python benchmarks/sweep_workers.py --out R --data ../shared/data/celeba [--postgres URL]
    python benchmarks/sweep_workers.py --out R --table-only > benchmarks/results/sweep_workers.md

Each configuration trains the same grid from scratch into its own folder (the demo preset, encoder seeds 0-3 and
noisy seeds 0-3, train only: the grid machinery, not the attack, is what is timed) through `deepobf sweep`, timed as
a whole process with its children's CPU seconds (`resource.getrusage`). Without ``--postgres`` a private server is
started from Debian's binaries (`.ci/postgres.sh`) when they are there. The table is read from the runs and the
studies on disk; nothing is written by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GRID = {"preset": "demo", "attack": False, "defaults": {"attributes": "Smiling/Male"},
        "runs": [{"method": ["encoder", "noisy"], "seed": [0, 1, 2, 3]}]}


def sweep_file(folder: Path, data: str | None) -> Path:
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, **({"data": data} if data else {})}))
    return path


def timed(cmd: list[str]) -> dict[str, float]:
    """Wall seconds and CPU seconds (user + system of the process and its children) of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu_use": round(cpu / wall, 2)}


def start_postgres() -> tuple[str, str] | None:
    data = tempfile.mkdtemp(prefix="deepobf-bench-pg-")
    proc = subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), "start", data, "54339"], capture_output=True,
                          text=True)
    return (proc.stdout.strip(), data) if proc.returncode == 0 else None


def study_summary(storage: str, name: str) -> dict[str, int]:
    import optuna

    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--data", help="dataset root (default: the embedded synthetic faces)")
    p.add_argument("--postgres", help="a PostgreSQL URL (default: start a private server when binaries exist)")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    root = Path(args.out)
    results_path = root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if not args.table_only:
        root.mkdir(parents=True, exist_ok=True)
        pg = None
        url = args.postgres
        if url is None:
            pg = start_postgres()
            url = pg[0] if pg else None
        configs = [("sqlite, 1 worker", 1, None), ("sqlite, 2 workers", 2, None)]
        if url:
            configs.append(("postgresql, 2 workers", 2, url))
        try:
            for label, workers, storage in configs:
                if label in results:
                    continue
                folder = root / label.replace(", ", "-").replace(" ", "")
                folder.mkdir(parents=True, exist_ok=True)
                path = sweep_file(folder, args.data)
                study = f"bench-{uuid.uuid4().hex[:8]}"
                cmd = [sys.executable, "-m", "deepobfuscator.cli", "sweep", str(path), "--out", str(folder / "runs"),
                       "--workers", str(workers), "--study", study, "--no-progress"]
                if storage:
                    cmd += ["--storage", storage]
                record = timed(cmd)
                used = storage or f"sqlite:///{(folder / 'runs' / 'study.db').resolve()}"
                record["trials"] = study_summary(used, study)
                record["epoch_s"] = round(sum(json.loads(line)["seconds"] for run in (folder / "runs").iterdir()
                                              if (run / "metrics.jsonl").is_file()
                                              for line in (run / "metrics.jsonl").read_text().splitlines()), 1)
                results[label] = record
                results_path.write_text(json.dumps(results, indent=2))
        finally:
            if pg:
                subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), "stop", pg[1]], capture_output=True)
    print(f"# `deepobf sweep` with workers (`benchmarks/sweep_workers.py`)\n\nMachine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs; grid: 8 `demo` runs (encoder and noisy, seeds 0-3), train only.\n")
    base = results.get("sqlite, 1 worker", {}).get("wall_s")
    print("| configuration | wall s | speed-up over 1 worker | CPU s (all processes) | CPU use (cores busy) | "
          "sum of epoch seconds | trials |")
    print("|---|---|---|---|---|---|---|")
    for label, r in results.items():
        speed = f"{base / r['wall_s']:.2f}x" if base else "n/a"
        print(f"| {label} | {r['wall_s']} | {speed} | {r['cpu_s']} | {r['cpu_use']} | {r['epoch_s']} | "
              f"{', '.join(f'{n} {k}' for k, n in sorted(r['trials'].items()))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
