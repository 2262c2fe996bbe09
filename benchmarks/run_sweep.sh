#!/usr/bin/env bash
# Train and attack the celeba-cpu comparison sweep, then write its report. Run from the repository root:
#   [WORKERS=2] benchmarks/run_sweep.sh [OUT]        (default OUT: runs/sweep-celeba-cpu)
# Resumable: rerun after an interruption; finished runs are skipped, failed ones retried.
set -uo pipefail
OUT="${1:-runs/sweep-celeba-cpu}"
DEEPOBF="${DEEPOBF:-deepobf}"
"$DEEPOBF" sweep benchmarks/sweep_celeba_cpu.yaml --out "$OUT" --workers "${WORKERS:-2}" --no-progress
status=$?
[ "$status" -ne 0 ] && echo "run_sweep.sh: some runs failed; see $OUT/sweep_status.json" >&2
"$DEEPOBF" report "$OUT" --out "$OUT/report" || exit 1
echo "report: $OUT/report/report.html and $OUT/report/report.md"
exit "$status"
