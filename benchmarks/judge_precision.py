"""bf16 against float32, for the judge's attackers and for training (issue 19, item 7), on this machine.

    # 1. one training step per attacker architecture, float32 and bf16 autocast, one thread (this machine only), and
    #    one stage-1 step of the O+C that each given run's config.yaml builds
    python benchmarks/judge_precision.py --steps --train-steps RUNS/s6-hardened RUNS/statefarm
    # 2. the same judge on two copies of one run, `deepobf attack RUN --amp none` and `--amp bf16`
    python benchmarks/judge_precision.py --runs RUNS \
        --compare set6=RUNS/s6/judge-none/attack.json:RUNS/s6-bf16/judge-bf16/attack.json
    # 3. runs trained in float32 and in bf16 (`--set train.amp=...`, two seeds each), every one judged the same way
    python benchmarks/judge_precision.py --training RUNS/s6-hardened=judge-bf16/attack.json ...
    # 4. the default judge (`deepobf attack RUN --out RUN/judge-full/attack.json`) against the run's training
    python benchmarks/judge_precision.py --full RUNS/s6-bf16-full

(1) times forward, loss, backward and Adam of every learned attacker (batch 64, channels-last as the judge runs them)
at a feature shape: the celeba-cpu hardened code (1 x 8 x 8) and an Encoder's features (width 0.25: 32 x 16 x 16),
the better of alternating measurements. (2) reads both judges' per-job records from the runs' work folders: every
learned attacker's number at every repeat count with its 95% interval (and the judge's headline, the best attacker
per attribute and repeat count, floors excluded), whether the bf16 value lies inside the float32 interval, epochs
on both and each job's seconds (comparable only when both judges ran on the same machine with the same load; the
step times of (1) are the like-for-like speed). (3) prints, per run, the precision and seed it trained with, the
precision of its judge's attackers, the deployed C's accuracy per intended attribute and the best fresh attacker per
private attribute and repeat count beside its floor. (4) prints judge_cost.py's table of a default judge: every
job's seconds, epochs and result, and the judge's job-seconds against the run's training seconds. Every number is
read from what the commands wrote; nothing is written by hand.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from deepobfuscator.attacks.heads import build_from_spec, classifier_spec, reconstructor_spec
from deepobfuscator.config import load_config, preset
from deepobfuscator.losses import attribute_loss, reconstruction_loss, resolve_msssim
from deepobfuscator.runs import run_specs
from deepobfuscator.training.modules import build_modules
from deepobfuscator.training.precision import apply_precision, native_bf16, set_precision

DECODERS = ["mirror", "urec1", "urec2", "resrec"]
CLASSIFIERS = ["vgg", "resnet", "mlp", "linear"]
SHAPES = {"hardened code (1x8x8)": (1, 8, 8), "Encoder features (32x16x16)": (32, 16, 16)}


def step_seconds(arch: str, shape: tuple[int, ...], amp: str, image_size: tuple[int, int] = (64, 64),
                 steps: int = 3) -> float:
    """Seconds of one training step of attacker ``arch`` on features of ``shape`` in precision ``amp``."""
    cfg = preset("celeba-cpu")
    torch.manual_seed(0)
    if arch in DECODERS:
        model = build_from_spec(reconstructor_spec(arch, shape, image_size, cfg.model))
        target = torch.rand(64, 3, *image_size)
        settings = resolve_msssim(cfg.msssim, image_size)
        def loss(out: torch.Tensor) -> torch.Tensor:
            return reconstruction_loss(out, target, "msssim", settings)
    else:
        model = build_from_spec(classifier_spec(arch, shape, 1, cfg.model, 512))
        labels = torch.randint(0, 2, (64, 1)).float()
        def loss(out: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.binary_cross_entropy_with_logits(out, labels)
    model.to(memory_format=torch.channels_last)
    set_precision(model, amp)
    x = torch.randn(64, *shape)
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss(model(x)).backward()
            opt.step()
        return (time.perf_counter() - start) / n
    run(1)
    return run(steps)


def steps_table(rounds: int = 3) -> list[str]:
    torch.set_num_threads(1)
    lines = ["## One training step per attacker, float32 and bf16 autocast (one thread, batch 64, 64 px)", "",
             "| features | attacker | float32 s | bf16 s | speed-up |", "|---|---|---|---|---|"]
    for label, shape in SHAPES.items():
        for arch in DECODERS + CLASSIFIERS:
            best = {"none": float("inf"), "bf16": float("inf")}
            for _ in range(rounds):  # alternate, so drifting load hits both alike
                for amp in best:
                    best[amp] = min(best[amp], step_seconds(arch, shape, amp))
            lines.append(f"| {label} | {arch} | {best['none']:.4f} | {best['bf16']:.4f} | "
                         f"{best['none'] / best['bf16']:.2f}x |")
    return lines


def train_step_seconds(run: Path, amp: str, steps: int = 4) -> float:
    """Median seconds of a stage-1 step (O+C forward, L(C), backward, Adam) of the modules the run ``run``'s
    config.yaml builds (every rule resolved when it was created), in precision ``amp``, with the run's layout."""
    cfg = load_config(run / "config.yaml")
    h, w = cfg.data.image_size
    task, private = run_specs(cfg)
    modules = build_modules(cfg, task, private, seed=0)
    modules.set_trainable("obfuscator", "classifier")
    apply_precision(modules, amp, bool(cfg.train.channels_last))
    opt = torch.optim.Adam(list(modules.obfuscator.parameters()) + list(modules.classifier.parameters()), 1e-4)
    n = cfg.train.batch_size
    x = torch.rand(n, 3, h, w)
    target = torch.stack([torch.randint(0, spec.num_classes, (n,)) for spec in task], 1)
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        loss = attribute_loss(modules.classifier(modules.obfuscator(x)), target, task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def train_steps_table(runs: list[Path], rounds: int = 2) -> list[str]:
    torch.set_num_threads(1)
    lines = ["## One stage-1 training step per run's O+C, float32 and bf16 (`train.amp`; one thread)", "",
             "| run (method, dataset, size) | batch | float32 s | bf16 s | speed-up |", "|---|---|---|---|---|"]
    for run in runs:
        cfg = load_config(run / "config.yaml")
        best = {"none": float("inf"), "bf16": float("inf")}
        for _ in range(rounds):  # alternate, so drifting load hits both alike
            for amp in best:
                best[amp] = min(best[amp], train_step_seconds(run, amp))
        lines.append(f"| {run.name} ({cfg.method}, {cfg.data.dataset}, {cfg.data.image_size[0]} px) | "
                     f"{cfg.train.batch_size} | "
                     f"{best['none']:.3f} | {best['bf16']:.3f} | {best['none'] / best['bf16']:.2f}x |")
    return lines


def work_records(attack_json: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(attacker, m) -> its stored record, for the attackers the judge of ``attack_json`` ran, from its work folder
    (the folder named in attack.json, looked up under the run beside it when the path is another machine's)."""
    attack = json.loads(attack_json.read_text())
    work = Path(attack["work_dir"])
    if not work.is_dir():
        work = next(p for p in attack_json.parents if (p / "attack").is_dir()) / "attack" / work.name
    names = set(attack["settings"]["attackers"] or [])
    out = {}
    for path in sorted(work.glob("*.s0.json")):
        record = json.loads(path.read_text())
        if record.get("kind") in ("attribute", "reconstruction") and (not names or record["name"] in names):
            out[(record["name"], str(record.get("m", "1")))] = record
    return out


def values(record: dict[str, Any]) -> list[tuple[str, float | None, list[float] | None, int | None]]:
    """(what, value, 95% interval, epochs) of a record: per attribute for an attribute attacker."""
    if record["kind"] == "attribute":
        return [(attr, r.get("balanced_accuracy"), r.get("balanced_accuracy_ci95"),
                 (record["training"].get(attr) or {}).get("epochs")) for attr, r in record["results"].items()]
    return [("MS-SSIM", record.get("ms_ssim"), record.get("ms_ssim_ci95"), record["training"].get("epochs"))]


def _v(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "")


def compare_table(name: str, fp32: Path, bf16: Path) -> list[str]:
    a, b = work_records(fp32), work_records(bf16)
    lines = [f"## {name}: the same judge in float32 and in bf16", "", f"`{fp32}` against `{bf16}` (RUNS: the runs' "
             "folder).", "",
             "| attacker | m | what | float32 [95% CI] | bf16 [95% CI] | bf16 inside | epochs f32 / bf16 | "
             "job s f32 / bf16 | s per epoch f32 / bf16 |", "|---|---|---|---|---|---|---|---|---|"]
    inside = total = 0
    seconds = [0.0, 0.0]
    epochs = [0, 0]
    for key in sorted(set(a) & set(b)):
        ra, rb = a[key], b[key]
        if not ra.get("training") or (rb.get("settings") or {}).get("amp") != "bf16":
            continue  # floors and the known-noise posterior run no network: the same in both
        for (what, va, ca, ea), (_, vb, cb, eb) in zip(values(ra), values(rb)):
            ok = va is not None and vb is not None and ca is not None and ca[0] <= vb <= ca[1]
            inside += ok
            total += 1
            epochs[0] += ea or 0
            epochs[1] += eb or 0
            per = [r.get("seconds", 0) / max(sum(e or 0 for *_, e in values(r)), 1) for r in (ra, rb)]
            lines.append(f"| {key[0]} | {key[1]} | {what} | {_v(va, ca)} | {_v(vb, cb)} | "
                         f"{'yes' if ok else 'no'} | {ea} / {eb} | {ra.get('seconds', 0):.0f} / "
                         f"{rb.get('seconds', 0):.0f} | {per[0]:.1f} / {per[1]:.1f} |")
        seconds[0] += ra.get("seconds") or 0.0
        seconds[1] += rb.get("seconds") or 0.0
    lines += ["", "The judge's headline, the best attacker per attribute and repeat count:", "",
              "| m | what | float32: best [95% CI] (attacker) | bf16: best (attacker) | bf16 inside |",
              "|---|---|---|---|---|"]
    for (m, what), (fa, fb) in sorted(best_per(a, b).items()):
        ok = fa[2] is not None and fa[2][0] <= fb[1] <= fa[2][1]
        lines.append(f"| {m} | {what} | {_v(fa[1], fa[2])} ({fa[0]}) | {_v(fb[1], fb[2])} ({fb[0]}) | "
                     f"{'yes' if ok else 'no'} |")
    lines += ["", f"bf16 values inside the float32 95% interval: {inside} of {total}; epochs {epochs[0]} (float32) "
              f"and {epochs[1]} (bf16); job seconds {seconds[0]:.0f} and {seconds[1]:.0f} "
              f"({seconds[0] / max(seconds[1], 1e-9):.2f}x, only comparable on one machine under one load)."]
    return lines


def best_per(a: dict[tuple[str, str], dict[str, Any]], b: dict[tuple[str, str], dict[str, Any]]
             ) -> dict[tuple[str, str], tuple[tuple[str, float, Any], tuple[str, float, Any]]]:
    """(m, what) -> the best (attacker, value, interval) among the attackers (not floors) both judges ran, per judge
    (highest balanced accuracy or MS-SSIM)."""
    out: dict[tuple[str, str], list[tuple[str, float, Any] | None]] = {}
    for key in set(a) & set(b):
        if a[key].get("floor"):
            continue
        for i, records in enumerate((a, b)):
            for what, value, ci, _ in values(records[key]):
                if value is None:
                    continue
                slot = out.setdefault((key[1], what), [None, None])
                if slot[i] is None or value > slot[i][1]:
                    slot[i] = (key[0], value, ci)
    return {k: (v[0], v[1]) for k, v in out.items() if v[0] is not None and v[1] is not None}


def training_table(entries: list[str]) -> list[str]:
    lines = ["## Training in float32 and in bf16", "",
             "| run | train.amp | seed | judge's attackers | intended accuracy (deployed C, the judge's test draw) | "
             "best private attacker, balanced, m = 1 [95% CI] / 8 / inf (floor) |", "|---|---|---|---|---|---|"]
    for entry in entries:
        run_text, _, judge = entry.partition("=")
        run = Path(run_text)
        summary = json.loads((run / "train_summary.json").read_text())
        cfg = (run / "config.yaml").read_text()
        amp = next((line.split(":", 1)[1].strip() for line in cfg.splitlines() if line.strip().startswith("amp:")),
                   "?")
        attack = json.loads((run / (judge or "attack.json")).read_text())
        utility = "; ".join(f"{k} {_v(v.get('accuracy'), v.get('accuracy_ci95'))}"
                            for k, v in attack["utility"].items())
        private = []
        for attr, rec in attack["privacy"].items():
            per_m = [rec["balanced_accuracy"]] + [attack["repeated"][m]["privacy"][attr]["balanced_accuracy"]
                                                  for m in attack.get("repeated", {})]
            floor = max((f or {}).get("balanced_accuracy") or 0.0
                        for f in (rec.get("label_floor"), rec.get("oracle_floor")))
            ci = rec.get("balanced_accuracy_ci95")
            private.append(f"{attr} {_v(per_m[0], ci)} / {' / '.join(f'{v:.3f}' for v in per_m[1:])} ({floor:.3f})")
        judged_in = {"none": "float32", "bf16": "bf16"}.get(attack["settings"].get("amp", "none"), "?")
        lines.append(f"| {run.name} | {amp} | {summary['seed']} | {judged_in} | {utility} | "
                     f"{'; '.join(private)} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", action="store_true", help="time one step per attacker, float32 and bf16")
    p.add_argument("--train-steps", nargs="*", default=[], metavar="RUN", help="time a stage-1 step of each run's O+C")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=FP32_ATTACK_JSON:BF16_ATTACK_JSON")
    p.add_argument("--runs", help="the runs' folder, written RUNS/ in the tables")
    p.add_argument("--training", nargs="*", default=[], metavar="RUN[=JUDGE_JSON]")
    p.add_argument("--full", nargs="*", default=[], metavar="RUN[:JUDGE_DIR]",
                   help="a default judge (RUN/JUDGE_DIR/attack.json, default judge-full) against the run's training "
                        "seconds (judge_cost.py's table)")
    args = p.parse_args()
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads available, native bf16: "
          f"{native_bf16('cpu')}; torch {torch.__version__}; python {platform.python_version()}.\n")
    out: list[str] = []
    if args.steps:
        out += steps_table() + [""]
    if args.train_steps:
        out += train_steps_table([Path(r) for r in args.train_steps]) + [""]
    for entry in args.compare:
        name, _, runs = entry.partition("=")
        fp32, _, bf16 = runs.partition(":")
        out += compare_table(name, Path(fp32), Path(bf16)) + [""]
    if args.training:
        out += training_table(args.training) + [""]
    for entry in args.full:
        from judge_cost import full_table, training_seconds  # the sibling script's table (run from benchmarks/)
        run_text, _, judge = entry.partition(":")
        run, judge = Path(run_text), judge or "judge-full"
        amp = json.loads((run / judge / "attack.json").read_text())["settings"].get("amp", "none")
        out += [f"## The default judge of `{run.name}` (`{judge}`), attackers in "
                f"{'bf16' if amp == 'bf16' else 'float32'}", ""]
        out += full_table(run, training_seconds(run), judge) + [""]
    text = "\n".join(out)
    if args.runs:  # results name runs relative to a placeholder folder, not this machine's paths
        text = text.replace(str(Path(args.runs).resolve()) + "/", "RUNS/").replace(args.runs.rstrip("/") + "/", "RUNS/")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
