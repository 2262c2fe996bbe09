"""Does the verdict hold when every attacker gets several tries? A judge run with `deepobf attack --seeds 0,1,2`.

    deepobf attack RUN --seeds 0,1,2 --attackers vgg,resnet,mlp,linear,oracle,known_noise,resrec,urec2,constant,mean_face,median_face \
        --out RUN/judge-seeds/attack.json
    python benchmarks/attacker_seeds.py RUN/judge-seeds/attack.json [--runs RUNS] > benchmarks/results/attacker_seeds_celeba_cpu.md

For each repeat count m and each private attribute: every learned attacker's balanced accuracy with each seed (read
from the judge's stored job records), the best over seeds and attackers (the judge's headline, chosen on the
evaluation images, so it errs on the attacker's side) against the floor at that m (the larger of the label floor and
the oracle floor, `attacks.floors.larger_floor`), and what a judge with seed 0 alone would have said. The same for the
decoders' MS-SSIM against the best constant image. Every number is read from attack.json and the job records.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deepobfuscator.attacks.floors import larger_floor


def records(attack: dict[str, Any], attack_json: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(attacker, m, seed) -> the stored job record of the judge (its work folder, found beside the run if moved)."""
    work = Path(attack["work_dir"])
    if not work.is_dir():
        work = attack_json.parent.parent / "attack" / work.name
    out = {}
    for path in sorted(work.glob("*.s*.json")):
        record = json.loads(path.read_text())
        if "seed" in record and "kind" in record:
            out[(record["name"], str(record.get("m", "1")), int(record["seed"]))] = record
    return out


def _view(attack: dict[str, Any], m: str) -> dict[str, Any]:
    return attack if m == "1" else attack["repeated"][m]


def header(columns: list[str], seeds: list[int]) -> list[str]:
    """A table's head: the given columns, one per seed, and the mean over seeds."""
    return ["| " + " | ".join([*columns, *(f"seed {s}" for s in seeds), "mean"]) + " |",
            "|" + "---|" * (len(columns) + len(seeds) + 1)]


def row(cells: list[str], values: list[float | None]) -> str:
    """One attacker's row: its cells, its value per seed and the mean of those it has."""
    known = [v for v in values if v is not None]
    return ("| " + " | ".join([*cells, *("-" if v is None else f"{v:.3f}" for v in values),
                               f"{sum(known) / len(known):.3f}" if known else "-"]) + " |")


def attribute_rows(attack: dict[str, Any], jobs: dict[tuple[str, str, int], dict[str, Any]], seeds: list[int]
                   ) -> list[str]:
    lines = header(["m", "attribute", "attacker"], seeds)
    verdict = []
    for m in attack["repeats"]:
        for attr, entry in _view(attack, m)["privacy"].items():
            floor, seed0 = larger_floor(entry), []
            names = sorted({n for (n, mm, _), r in jobs.items() if mm == m and r["kind"] == "attribute"
                            and attr in r.get("results", {})})
            for name in names:
                values = [jobs.get((name, m, s), {}).get("results", {}).get(attr, {}).get("balanced_accuracy")
                          for s in seeds]
                tag = " (floor)" if jobs[(name, m, seeds[0])].get("floor") else ""
                lines.append(row([m, attr, name + tag], values))
                if not tag and values[0] is not None:
                    seed0.append((values[0], name))
            best, single = entry["balanced_accuracy"], max(seed0) if seed0 else (None, None)
            verdict.append(f"- {attr}, m = {m}: best of {len(seeds)} seeds {best:.3f} ({entry['best_attacker']}), "
                           f"{best - floor:+.3f} above the floor {floor:.3f}; seed 0 alone "
                           + ("n/a" if single[0] is None else f"{single[0]:.3f} ({single[1]}), "
                              f"{single[0] - floor:+.3f}") + ".")
    return lines + [""] + verdict


def decoder_rows(attack: dict[str, Any], jobs: dict[tuple[str, str, int], dict[str, Any]], seeds: list[int]
                 ) -> list[str]:
    lines = header(["m", "decoder"], seeds)
    verdict = []
    for m in attack["repeats"]:
        rec = _view(attack, m)["reconstruction"]
        names = sorted({n for (n, mm, _), r in jobs.items() if mm == m and r["kind"] == "reconstruction"
                        and r.get("n") == rec["per_attacker"].get(n, {}).get("n")})  # the inversion's subset apart
        for name in names:
            values = [jobs.get((name, m, s), {}).get("ms_ssim") for s in seeds]
            tag = " (floor)" if jobs[(name, m, seeds[0])].get("floor") else ""
            lines.append(row([m, name + tag], values))
        floor = max(r["ms_ssim"] for n, r in rec["per_attacker"].items() if r.get("floor"))
        verdict.append(f"- m = {m}: best decoder of {len(seeds)} seeds {rec['ms_ssim']:.3f} ({rec['best_attacker']}), "
                       f"{rec['ms_ssim'] - floor:+.3f} above the best constant image {floor:.3f}.")
    return lines + [""] + verdict


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attack_json", nargs="+", type=Path)
    p.add_argument("--runs", help="the runs' folder, written RUNS/ in the output")
    args = p.parse_args()
    out = ["# Attackers with several seeds (`benchmarks/attacker_seeds.py`)", ""]
    for path in args.attack_json:
        attack = json.loads(path.read_text())
        seeds = attack["settings"].get("seeds") or [attack["settings"]["seed"]]
        jobs = records(attack, path)
        timing = attack.get("timing") or {}
        out += [f"## `{path}`", "", f"Run `{attack['run']}`; attacker seeds {', '.join(map(str, seeds))}; "
                f"{attack['eval_images']} {attack['split']} images; budget `{attack['budget']['name']}`; "
                f"{timing.get('jobs_s', 0):.0f} job-seconds in all (counting jobs an earlier invocation or judge of "
                f"the same run finished; the last invocation {timing.get('total_s', 0):.0f} s wall).", "",
                "### Private attributes: balanced accuracy per attacker and seed", ""]
        out += attribute_rows(attack, jobs, seeds)
        out += ["", "### Decoders: MS-SSIM per seed", ""] + decoder_rows(attack, jobs, seeds) + [""]
    text = "\n".join(out)
    if args.runs:
        text = text.replace(str(Path(args.runs).resolve()) + "/", "RUNS/").replace(args.runs.rstrip("/") + "/", "RUNS/")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
