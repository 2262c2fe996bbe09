"""What the judge costs, next to the training it judges, and whether its fast path agrees with the black box.

    # two celeba-cpu runs (the hardened default and an Encoder trained as long), then the judges
    python benchmarks/judge_cost.py --runs R --data ../shared/data/celeba            # trains, judges, prints
    python benchmarks/judge_cost.py --runs R --table-only > benchmarks/results/judge_cost_celeba_cpu.md

For each run (``R/hardened``: ``deepobf train --preset celeba-cpu``; ``R/encoder``: ``deepobf baseline encoder
--preset celeba-cpu --set train.epochs_pretrain=11``, the hardened run's epochs):

- ``cold``: the same judge with ``--cold`` (every learned attacker at m = 8 and inf from scratch); the records of
  those jobs are kept in ``RUN/judge-cold/records/`` and set beside the default judge's warm-started ones
  (epochs, seconds, result and whether it lies in the from-scratch 95% interval);
- ``full``: the default ``deepobf attack RUN`` (every attacker, m = 1, 8 and inf for a stochastic run, all training
  images, decoders, re-identification), timed as a whole process -> ``RUN/judge-full/attack.json``;
- for the stochastic run, the same suite at the quick budget on m = 1 and 8 once on the fast path and once on the
  black-box path (``--black-box``) -> ``RUN/judge-quick-fast/``, ``RUN/judge-quick-bb/``: every attribute attacker's
  balanced accuracy and every decoder's MS-SSIM at m = 1 and 8 side by side with their 95% intervals, whether the
  fast value lies inside the black-box interval, and each attacker's seconds per epoch on both paths (the speed-up).

Every number is read from the attack.json files and the runs' metrics; nothing is written by hand. Timings are of
this machine (see the header the script prints); rerun the baseline on the same machine before comparing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from deepobfuscator.attacks.schedule import load_json

RUNS = {"hardened": ["train", "--preset", "celeba-cpu"],
        "encoder": ["baseline", "encoder", "--preset", "celeba-cpu", "--set", "train.epochs_pretrain=11"]}
JUDGES = {"cold": ["--cold"], "full": [], "quick-fast": ["--budget", "quick", "--repeat", "1,8"],
          "quick-bb": ["--budget", "quick", "--repeat", "1,8", "--black-box"]}


def deepobf(*args: str) -> float:
    """Run `deepobf ARGS` (this interpreter's package) and return its wall seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deepobfuscator.cli", *args, "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def training_seconds(run: Path) -> float:
    """Seconds the run's epochs took (metrics.jsonl), without data preparation."""
    return sum(json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines())


def _f(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(bounds: Any) -> str:
    return "" if not bounds or bounds[0] is None else f" [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def _per_epoch(training: dict[str, Any] | None) -> float | None:
    if not training or not training.get("epochs") or training.get("seconds") is None:
        return None
    return training["seconds"] / training["epochs"]


def job_rows(attack: dict[str, Any], work: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(attacker, m) -> the job's record (read from the attack's work folder)."""
    out = {}
    for path in sorted(work.glob("*.s0.json")):
        record = json.loads(path.read_text())
        if record.get("settings", {}).get("sampling") != attack["sampling"]["path"]:
            continue
        out[(record["name"], record.get("m", "1"))] = record
    return out


def own_rows(rows: dict[tuple[str, str], dict[str, Any]], jobs: dict[str, float]
             ) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], float]]:
    """Split a work folder's records into this judge's (their seconds are the ones its attack.json recorded) and the
    jobs whose record a later judge in the same folder replaced (``--retrain``, another ``--amp``): (attacker, m) ->
    the seconds this judge recorded. Without recorded job seconds every record counts as the judge's own."""
    if not jobs:
        return rows, {}
    own, replaced = {}, {}
    for stem, seconds in jobs.items():
        job, _, seed = stem.rpartition(".")
        if seed != "s0":
            continue
        name, _, m = job.partition("@m")
        key = (name, m or "1")
        record = rows.get(key)
        if record is not None and abs((record.get("seconds") or 0.0) - seconds) < 0.01:
            own[key] = record
        else:
            replaced[key] = seconds
    return own, replaced


def local_work(run: Path, attack: dict[str, Any]) -> Path:
    return run / "attack" / Path(attack["work_dir"]).name


def _epochs(training: dict[str, Any] | None) -> int | None:
    return (training or {}).get("epochs")


def attacker_values(record: dict[str, Any], of_fit: Callable[[dict[str, Any] | None], Any] = _per_epoch
                    ) -> list[tuple[str, float | None, Any, Any]]:
    """(what, value, interval, ``of_fit`` of its training record: seconds per epoch by default) of one job: per
    attribute for attribute attackers."""
    if record["kind"] == "attribute":
        return [(attr, r.get("balanced_accuracy"), r.get("balanced_accuracy_ci95"),
                 of_fit((record.get("training") or {}).get(attr)))
                for attr, r in record["results"].items()]
    return [("MS-SSIM", record.get("ms_ssim"), record.get("ms_ssim_ci95"), of_fit(record.get("training")))]


QUICK_IMAGES = 3000  # the quick budget's max_train_images: how a quick judge's work folder is recognised


def quick_work(run: Path, sampling: str) -> Path | None:
    """The work folder of the quick judge on ``sampling``'s path (``fast`` or ``black-box``), found from its records
    (so an unfinished judge, which has written no attack.json, is read too)."""
    for work in sorted((run / "attack").glob("*/")):
        for path in work.glob("*.s0.json"):
            settings = json.loads(path.read_text()).get("settings") or {}
            if settings.get("sampling") == sampling and settings.get("max_train_images") == QUICK_IMAGES:
                return work
            break
    return None


def agreement_table(run: Path) -> list[str]:
    """Every job both quick judges finished, side by side (from their work folders)."""
    fast, slow = (load_json(run / f"judge-quick-{j}" / "attack.json") for j in ("fast", "bb"))
    works = quick_work(run, "fast"), quick_work(run, "black-box")
    if None in works:
        return []
    a, b = (job_rows({"sampling": {"path": path}}, work) for path, work in zip(("fast", "black-box"), works))
    lines = ["| attacker | m | what | fast path [95% CI] | black-box path [95% CI] | fast inside black-box CI | "
             "s/epoch fast | s/epoch black-box | speed-up | job s fast | job s black-box |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    inside = total = 0
    for key in sorted(set(a) & set(b)):
        for (what, va, ca, ea), (_, vb, cb, eb) in zip(attacker_values(a[key]), attacker_values(b[key])):
            ok = None if va is None or not cb or cb[0] is None else cb[0] <= va <= cb[1]
            if ok is not None and not a[key].get("floor", False) and a[key]["name"] not in ("mean_face",
                                                                                           "median_face"):
                inside, total = inside + int(ok), total + 1
            speed = None if not ea or not eb else eb / ea
            job_speed = (b[key].get("seconds") or 0) / max(a[key].get("seconds") or 1e-9, 1e-9)
            lines.append(f"| {key[0]} | {key[1]} | {what} | {_f(va)}{_ci(ca)} | {_f(vb)}{_ci(cb)} | "
                         f"{'yes' if ok else 'no' if ok is not None else 'n/a'} | {_f(ea, 1)} | {_f(eb, 1)} | "
                         f"{_f(speed, 1) + ('x' if speed else '')} | {_f(a[key].get('seconds'), 0)} | "
                         f"{_f(b[key].get('seconds'), 0)} "
                         f"({job_speed:.1f}x) |")
    lines += ["", f"Fast-path values inside the black-box path's 95% interval: {inside} of {total} "
                  "(attackers and decoders; floors excluded)."]
    if fast and slow:
        lines.append(f"Whole quick judge (m = 1, 8): fast {fast['timing']['total_s']:.0f} s, black-box "
                     f"{slow['timing']['total_s']:.0f} s ({slow['timing']['total_s'] / fast['timing']['total_s']:.1f}x).")
    else:
        shared = sorted(set(a) & set(b))
        ja, jb = (sum(rows[k].get("seconds") or 0 for k in shared) for rows in (a, b))
        lines.append(f"Unfinished judges (stopped; {len(a)} fast and {len(b)} black-box jobs done): the {len(shared)} "
                     f"jobs both finished took {ja:.0f} s on the fast path and {jb:.0f} s on the black-box path "
                     f"({jb / max(ja, 1e-9):.1f}x).")
    return lines


def job_cells(record: dict[str, Any]) -> tuple[str, str, str]:
    """A job's epochs (cap), whether it stopped early, and its result, as table cells (per attribute for attribute
    attackers)."""
    training = record.get("training") or {}
    if record["kind"] == "attribute":
        fits = [t for t in training.values() if isinstance(t, dict)]
        return ("; ".join(f"{t.get('epochs')} ({t.get('max_epochs')})" for t in fits if t.get("epochs")),
                "; ".join(str(t["stopped_early"]) for t in fits if "stopped_early" in t),
                "; ".join(f"{a} {_f(r.get('balanced_accuracy'))}" for a, r in record["results"].items()))
    return (f"{training.get('epochs')} ({training.get('max_epochs')})" if training.get("epochs") else "",
            str(training.get("stop") or training.get("stopped_early", "")),
            f"MS-SSIM {_f(record.get('ms_ssim'))} (n={record.get('n')})")


COLD_RECORDS = "judge-cold/records"  # the from-scratch m > 1 records, kept before the default judge replaces them


def keep_cold_records(run: Path) -> int:
    """Copy the records of the learned m > 1 jobs of the judge just run with ``--cold`` to ``RUN/judge-cold/records``
    (the default judge's warm-started jobs write the same file names); returns how many."""
    target = run / COLD_RECORDS
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for work in (run / "attack").glob("*/"):
        for path in work.glob("*@m*.s*.json"):
            text = path.read_text()
            record = json.loads(text)
            if record.get("training") and "warm_from" not in record.get("settings", {}):
                (target / path.name).write_text(text)
                count += 1
    return count


def warm_table(run: Path) -> list[str]:
    """Each learned attacker at m > 1 trained from scratch (``--cold``) beside the default judge's warm start from
    its own fit at the next smaller m: epochs, seconds, result and whether the warm value lies in the cold interval."""
    cold_dir = run / COLD_RECORDS
    if not cold_dir.is_dir():
        return []
    lines = ["| attacker | m | from scratch: epochs, s | result [95% CI] | warm start: epochs, s | result [95% CI] | "
             "inside | epochs saved |", "|---|---|---|---|---|---|---|---|"]
    cold_epochs = warm_epochs = inside = total = 0
    for path in sorted(cold_dir.glob("*.json")):
        cold = json.loads(path.read_text())
        warm = None
        for work in (run / "attack").glob("*/"):
            candidate = load_json(work / path.name)
            if candidate and candidate.get("settings", {}).get("warm_from"):
                warm = candidate
        if warm is None:
            continue
        for (what, vc, cc, ec), (_, vw, cw, ew) in zip(attacker_values(cold, _epochs), attacker_values(warm, _epochs)):
            ok = None if vw is None or not cc or cc[0] is None else cc[0] <= vw <= cc[1]
            inside, total = inside + int(bool(ok)), total + int(ok is not None)
            cold_epochs, warm_epochs = cold_epochs + (ec or 0), warm_epochs + (ew or 0)
            lines.append(f"| {cold['name']} | {cold.get('m')} | {ec}, {_f(cold.get('seconds'), 0)} | {what} {_f(vc)}{_ci(cc)} | "
                         f"{ew}, {_f(warm.get('seconds'), 0)} (from {warm['settings']['warm_from']}) | {_f(vw)}{_ci(cw)} | "
                         f"{'yes' if ok else 'no' if ok is not None else 'n/a'} | "
                         f"{'' if not ec or ew is None else f'{1 - ew / ec:.0%}'} |")
    if total:
        lines += ["", f"Warm-started values inside the from-scratch 95% interval: {inside} of {total}; epochs "
                      f"{warm_epochs} against {cold_epochs} ({1 - warm_epochs / max(cold_epochs, 1):.0%} fewer). Seconds "
                      "are each job's own and depend on what else shared the CPU; epochs are the like-for-like cost."]
    return lines


def _fits(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The learned fits of one job (one per attribute for attribute attackers; none for floors and the inversion)."""
    training = record.get("training") or {}
    fits = list(training.values()) if record["kind"] == "attribute" else [training]
    return [t for t in fits if isinstance(t, dict) and t.get("epochs") and t.get("seconds") is not None]


def least_cost(rows: dict[tuple[str, str], dict[str, Any]], train_s: float, workers: int) -> list[str]:
    """The least the same judge could cost under its own budgets: every learned fit stopping at its first chance
    (``patience + 1`` epochs: the best epoch its first) at the seconds per epoch it measured, everything else (the
    floors, the inversion, evaluation, each job's own overhead) as it ran; split by kind of job."""
    least = {"decoders": 0.0, "attribute attackers": 0.0, "other jobs": 0.0}
    spent = dict.fromkeys(least, 0.0)
    for record in rows.values():
        fits = _fits(record)
        kind = ("attribute attackers" if record["kind"] == "attribute" else "decoders") if fits else "other jobs"
        seconds = record.get("seconds") or 0.0
        overhead = seconds - sum(t["seconds"] for t in fits)
        minimum = sum(t["seconds"] / t["epochs"] * min(t["epochs"], (t.get("patience") or 0) + 1) for t in fits)
        least[kind] += overhead + minimum
        spent[kind] += seconds
    total = sum(least.values())
    parts = ", ".join(f"{k} {least[k]:.0f} (ran {spent[k]:.0f})" for k in least)
    return [f"The least this judge could cost under its own budgets (every learned fit stopping at its first chance, "
            f"patience + 1 epochs, at the seconds per epoch it measured; everything else as it ran): {total:.0f} "
            f"job-seconds ({parts}), {total / train_s:.1f}x training; on {workers} worker(s) packed without a gap "
            f"{total / workers:.0f} s wall, {total / workers / train_s:.1f}x training."]


def full_table(run: Path, train_s: float, judge: str = "judge-full") -> list[str]:
    attack = json.loads((run / judge / "attack.json").read_text())
    timing = attack["timing"]
    rows, replaced = own_rows(job_rows(attack, local_work(run, attack)), timing.get("jobs") or {})
    lines = [f"Training {train_s:.0f} s; the default judge's last invocation {timing['total_s']:.0f} s wall "
             f"({timing['total_s'] / train_s:.1f}x training; {timing['workers']} worker(s) x "
             f"{timing['threads_per_worker']} thread(s); preparing {timing['prepare_s']:.0f} s; "
             f"sampling path: {attack['sampling']['path']}). Its jobs took {timing['jobs_s']:.0f} job-seconds in all "
             f"({timing['jobs_s'] / train_s:.1f}x training), counting jobs an earlier, interrupted invocation finished "
             "(a resumed judge reuses them, so its wall clock alone understates the cost).", "",
             "| attacker | m | seconds | epochs (cap) | stopped early | result |", "|---|---|---|---|---|---|"]
    for (name, m), record in sorted(rows.items(), key=lambda kv: -(kv[1].get("seconds") or 0)):
        epochs, early, result = job_cells(record)
        lines.append(f"| {name} | {m} | {_f(record.get('seconds'), 0)} | {epochs} | {early} | {result} |")
    for (name, m), seconds in sorted(replaced.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {m} | {seconds:.0f} | | | (its record was replaced by a later judge's) |")
    verdict = []
    for attr, e in attack["privacy"].items():
        row = [f"m=1 {_f(e['balanced_accuracy'])} ({e['best_attacker']})"]
        row += [f"m={m} {_f(r['privacy'][attr]['balanced_accuracy'])} ({r['privacy'][attr]['best_attacker']})"
                for m, r in (attack.get("repeated") or {}).items()]
        verdict.append(f"{attr}: " + ", ".join(row))
    rec = attack["reconstruction"]
    verdict.append(f"reconstruction m=1 {_f(rec['ms_ssim'])} ({rec['best_attacker']}; constant "
                   f"{_f((rec.get('floor') or {}).get('ms_ssim'))})" + "".join(
                       f", m={m} {_f(r['reconstruction']['ms_ssim'])}" for m, r in (attack.get('repeated') or {}).items()))
    least = least_cost(rows, train_s, timing["workers"]) if not replaced else [
        f"The least this judge could cost is not computed: {len(replaced)} of its jobs' records were replaced by a "
        "later judge sharing its work folder."]
    return lines + [""] + [f"- {v}" for v in verdict] + [""] + least


def partial_table(run: Path) -> list[str]:
    """The finished jobs of an unfinished default judge (read from its work folders), or nothing."""
    if not (run / "metrics.jsonl").is_file():
        return []
    train_s = training_seconds(run)
    lines = []
    others = {w.name for w in (quick_work(run, "fast"), quick_work(run, "black-box")) if w}
    for work in sorted((run / "attack").glob("*/")):
        if work.name in others:  # another judge's work folder (the quick-budget comparison)
            continue
        records = [json.loads(p.read_text()) for p in sorted(work.glob("*.s0.json"))]
        if not records:
            continue
        total = sum(r.get("seconds") or 0.0 for r in records)
        lines += [f"Training {train_s:.0f} s. Work folder `{work.name}`: {len(records)} jobs finished, "
                  f"{total:.0f} job-seconds ({total / train_s:.1f}x training) before the judge was stopped; "
                  "the jobs still to run are not counted.", "",
                  "| attacker | m | seconds | epochs (cap) | result |", "|---|---|---|---|---|"]
        for r in sorted(records, key=lambda r: -(r.get("seconds") or 0)):
            epochs, _, result = job_cells(r)
            lines.append(f"| {r['name']} | {r.get('m', '1')} | {_f(r.get('seconds'), 0)} | {epochs} | {result} |")
        lines += ["", "Best among the finished jobs, per repeat count (floors excluded; a lower bound on the "
                  "judge's best while jobs are missing):", ""]
        for m in sorted({str(r.get("m", "1")) for r in records}, key=lambda m: float(m)):
            at_m = [r for r in records if str(r.get("m", "1")) == m and not r.get("floor")]
            attrs = [(v.get("balanced_accuracy") or 0.0, a, r["name"]) for r in at_m if r["kind"] == "attribute"
                     for a, v in r["results"].items()]
            recs = [(r.get("ms_ssim") or 0.0, r["name"]) for r in at_m if r["kind"] != "attribute"]
            parts = [f"{a} {v:.3f} ({n})" for a in sorted({a for _, a, _ in attrs})
                     for v, _, n in sorted((x for x in attrs if x[1] == a), reverse=True)[:1]]
            parts += [f"MS-SSIM {v:.3f} ({n})" for v, n in sorted(recs, reverse=True)[:1]]
            lines.append(f"- m = {m}: " + ("; ".join(parts) or "no attacker finished"))
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="folder holding (or receiving) the runs hardened/ and encoder/")
    p.add_argument("--data", help="CelebA root (to train missing runs)")
    p.add_argument("--only", nargs="+", choices=list(RUNS), default=list(RUNS))
    p.add_argument("--judges", nargs="+", choices=list(JUDGES), default=list(JUDGES))
    p.add_argument("--table-only", action="store_true", help="print the tables from what is on disk")
    args = p.parse_args()
    root = Path(args.runs)
    timings: dict[str, dict[str, float]] = {}
    for name in args.only:
        run = root / name
        if not args.table_only:
            if not (run / "checkpoints" / "final.safetensors").is_file():
                if not args.data:
                    p.error(f"{run} is not trained; pass --data")
                deepobf(*RUNS[name], "--data", args.data, "--task", "Smiling", "--private", "Male", "--out", str(run))
            for judge in args.judges:
                if name == "encoder" and judge != "full":
                    continue  # a deterministic pipeline has no sampling path to compare
                out = run / f"judge-{judge}" / "attack.json"
                if not out.is_file():
                    timings.setdefault(name, {})[judge] = deepobf("attack", str(run), "--out", str(out),
                                                                  *JUDGES[judge])
                    if judge == "cold":
                        keep_cold_records(run)
    print(f"# The judge's cost at celeba-cpu (`benchmarks/judge_cost.py`)\n\nMachine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), torch threads default; "
          f"python {platform.python_version()}.\n")
    for name in args.only:
        run = root / name
        warm = warm_table(run)
        warm_text = ("\n### Repeated-query attackers: warm start against from scratch\n\n" + "\n".join(warm) + "\n"
                     if warm else "")
        if not (run / "judge-full" / "attack.json").is_file():
            partial = partial_table(run)
            if partial:
                print(f"## {name} (`{run.name}`): the default judge did not finish\n")
                print("\n".join(partial) + "\n")
            print(warm_text)
        else:
            print(f"## {name} (`{run.name}`)\n")
            print("\n".join(full_table(run, training_seconds(run))))
            print(warm_text)
        agreement = agreement_table(run) if (run / "attack").is_dir() else []
        if agreement:
            print("\n### Fast path against the black-box path (quick budget, m = 1 and 8)\n")
            print("\n".join(agreement))
        print()
    if timings:
        print(f"(process wall seconds of this invocation: {json.dumps(timings)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
