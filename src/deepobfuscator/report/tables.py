"""Report tables: tradeoff (Figure 6's numbers), lambda1 (Figures 7-8), reconstruction (Tables 3-4), ablation (4.2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .results import DEFEND_LABELS, RunResult, metric


@dataclass
class Table:
    """A titled table of text cells."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def _attacked(results: list[RunResult]) -> list[RunResult]:
    return [r for r in results if r.attack]


def _order(r: RunResult) -> tuple:
    p = r.cfg.privacy
    return (r.attribute_set, r.method != "encoder", r.method, p.defend != "both", p.defend, p.lambda1, p.lambda2,
            sorted((k, str(v)) for k, v in r.cfg.params.items()), r.name)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _private_cells(r: RunResult) -> str:
    cells = []
    for attr in r.cfg.data.private:
        best = r.privacy_entry(attr).get("best_attacker")
        cells.append(f"{attr} {r.privacy(attr).fmt()}" + (f" ({best})" if best else ""))
    return "; ".join(cells) or "-"


def _task_cells(r: RunResult) -> str:
    return "; ".join(f"{a} {r.utility(a).fmt()}" for a in r.cfg.data.task) or "-"


def score(r: RunResult) -> float | None:
    """Tradeoff score: intended-task advantage over majority minus the best attacker's (both normalised)."""
    u, leak = r.usefulness(), r.leakage()
    return None if u is None or leak is None else u - leak


def pareto_front(results: list[RunResult]) -> set[str]:
    """Runs (by path) not dominated in (task accuracy up, private accuracy down) within their attribute set."""
    front = set()
    pts = {}
    for r in _attacked(results):
        u = r.task_accuracy().value
        priv = [r.privacy(a).value for a in r.cfg.data.private]
        if u is None or any(v is None for v in priv):
            continue
        pts[str(r.path)] = (r.attribute_set, u, sum(priv) / max(1, len(priv)))  # type: ignore[arg-type]
    for key, (aset, u, p) in pts.items():
        dominated = any(a == aset and u2 >= u and p2 <= p and (u2 > u or p2 < p)
                        for k2, (a, u2, p2) in pts.items() if k2 != key)
        if not dominated:
            front.add(key)
    return front


def _floor_cells(r: RunResult) -> str:
    cells = []
    for a in r.cfg.data.private:
        ba, label, oracle = r.balanced(a).value, r.label_floor(a), r.oracle_floor(a)
        cells.append(f"{a} {_fmt(ba)} (label floor {_fmt(label)}, oracle floor {_fmt(oracle)})")
    return "; ".join(cells) or "-"


def tradeoff_table(results: list[RunResult]) -> Table:
    """Per run: intended accuracy, best attacker's private accuracy and balanced accuracy beside the floors,
    leakage above the floor, majority rates, score, Pareto front."""
    front = pareto_front(results)
    t = Table("Utility-privacy tradeoff (paper Figure 6)",
              ["Method", "Setting", "Intended / private", "Intended accuracy [95% CI]",
               "Private accuracy, best attacker [95% CI]", "Private majority",
               "Private balanced accuracy, best attacker (floors)", "Leakage above floor", "Score", "Pareto", "Run"],
              note="Score = (intended accuracy - majority) / (1 - majority) minus (best attacker's private accuracy "
                   "- majority) / (1 - majority), averaged over attributes; higher is a better tradeoff. Pareto: no "
                   "run with the same attributes has both higher intended and lower private accuracy. The best attacker "
                   "is the attack suite's choice (highest balanced accuracy); its accuracy is shown. Leakage above "
                   "floor: the best attacker's balanced accuracy minus the larger of the label floor and the oracle floor "
                   "(an attacker on the deployed C's logits), or minus chance (0.5) for attack results without floors.")
    for r in sorted(_attacked(results), key=_order):
        majority = "; ".join(f"{a} {_fmt(r.majority(a))}" for a in r.cfg.data.private) or "-"
        t.rows.append([r.method_label, r.setting or "-", r.attribute_set, _task_cells(r), _private_cells(r), majority,
                       _floor_cells(r), _fmt(leakage(r)), _fmt(score(r)), "yes" if str(r.path) in front else "",
                       r.shown])
    return t


TRADEOFF_MARGIN = 0.03  # intended accuracy may fall this far below the Encoder's


def leakage(r: RunResult) -> float | None:
    """Mean over private attributes of the best attacker's leakage above the floor (see
    :meth:`RunResult.leakage_above_floor`); lower is better."""
    values = [r.leakage_above_floor(a) for a in r.cfg.data.private]
    if not values or any(v is None for v in values):
        return None
    return sum(v[0] for v in values) / len(values)  # type: ignore[index]


def reference_accuracy(results: list[RunResult], attribute_set: str) -> tuple[float, str] | None:
    """The intended accuracy the margin is measured from: the Encoder's (the best Encoder run's) for the attribute
    set, else the best run's; with what it is."""
    runs = [r for r in _attacked(results) if r.attribute_set == attribute_set and r.task_accuracy().value is not None]
    encoders = [r for r in runs if r.method == "encoder"]
    pool, what = (encoders, "Encoder") if encoders else (runs, "best run")
    if not pool:
        return None
    return max(r.task_accuracy().value for r in pool), what  # type: ignore[type-var]


def best_tradeoff(results: list[RunResult], margin: float = TRADEOFF_MARGIN
                  ) -> list[tuple[str, RunResult, float, float, str]]:
    """Per attribute set, among runs whose intended accuracy is within ``margin`` of the Encoder's, the one with the
    least leakage above the floor: (attribute set, run, leakage, reference accuracy, what the reference is).

    A run that keeps nothing (intended accuracy near the majority rate) cannot win: it is outside the margin.
    """
    best: dict[str, tuple[RunResult, float, float, str]] = {}
    for aset in sorted({r.attribute_set for r in _attacked(results)}):
        ref = reference_accuracy(results, aset)
        if ref is None:
            continue
        for r in _attacked(results):
            acc, leak = r.task_accuracy().value, leakage(r)
            if r.attribute_set != aset or acc is None or leak is None or acc < ref[0] - margin - 1e-9:
                continue
            if aset not in best or leak < best[aset][1]:
                best[aset] = (r, leak, ref[0], ref[1])
    return [(a, r, leak, ref, what) for a, (r, leak, ref, what) in sorted(best.items())]


def lambda_runs(results: list[RunResult]) -> list[RunResult]:
    """DeepObfuscator runs defending against both attacks (the lambda1 study)."""
    return sorted((r for r in _attacked(results) if r.method == "deepobfuscator" and r.defend == "both"
                   and r.uses_lambda), key=_order)


def lambda_table(results: list[RunResult]) -> Table:
    """Intended and private accuracy per lambda1 and attribute set (numbers of Figures 7-8)."""
    t = Table("DeepObfuscator accuracy per λ1 (paper Figures 7-8)",
              ["Intended / private", "λ1", "λ2", "Intended accuracy [95% CI]",
               "Private accuracy, best attacker [95% CI]", "Run"])
    for r in lambda_runs(results):
        t.rows.append([r.attribute_set, f"{r.cfg.privacy.lambda1:g}", f"{r.cfg.privacy.lambda2:g}", _task_cells(r),
                       _private_cells(r), r.shown])
    return t


def attackers(results: list[RunResult]) -> list[str]:
    """Reconstruction attackers present in any run, in first-seen order."""
    names: list[str] = []
    for r in _attacked(results):
        for name in r.reconstruction().get("per_attacker", {}) or {}:
            if name not in names:
                names.append(name)
    return names


def _recon_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{metric(entry, 'ms_ssim').fmt()} / {metric(entry, 'psnr').fmt(2)} dB"


def _reid_cell(r: RunResult) -> str:
    reid = (r.attack or {}).get("reid") or {}
    cells = []
    for key in ("same_image", "same_person"):
        value = reid.get(key)
        m = metric(value, "rate") if isinstance(value, dict) else metric(reid, key)
        if m.value is not None:
            cells.append(f"{key.replace('_', ' ')} {m.fmt()}")
    return "; ".join(cells) or "-"


def reconstruction_table(results: list[RunResult]) -> Table:
    """MS-SSIM / PSNR per attacker per run (paper Tables 3-4), best attacker and re-identification."""
    names = attackers(results)
    t = Table("Reconstruction attacks: MS-SSIM / PSNR [95% CI] per attacker (paper Tables 3-4)",
              ["Method", "Setting", "Intended / private", *names, "Best attacker", "Re-identification", "Run"],
              note="Lower MS-SSIM and PSNR mean less recognisable reconstructions (better privacy).")
    for r in sorted(_attacked(results), key=_order):
        rec = r.reconstruction()
        per = rec.get("per_attacker", {}) or {}
        best = rec.get("best_attacker")
        best_cell = f"{best}: {_recon_cell(per.get(best) or rec)}" if best else _recon_cell(rec)
        t.rows.append([r.method_label, r.setting or "-", r.attribute_set, *[_recon_cell(per.get(n)) for n in names],
                       best_cell, _reid_cell(r), r.shown])
    return t


def averaging_table(results: list[RunResult]) -> Table:
    """Single queries beside averaged ones: the best attacker's balanced accuracy per private attribute at m = 1, 8
    and the averaging limit, read against the larger floor."""
    repeats: list[str] = []
    for r in _attacked(results):
        repeats += [m for m in r.repeats() if m not in repeats]
    t = Table("Averaged queries: best attacker's balanced accuracy (floor) per number m of queries of one image",
              ["Method", "Setting", "Intended / private", *[f"m = {m}" for m in repeats], "Run"],
              note="m = inf is the averaging limit (the noise-free mean an attacker converges to by averaging many "
                   "queries of the same image, e.g. a burst or a video). Floor: the larger of the label floor and the "
                   "oracle floor at the same m (C's answers averaged as the features are); a deterministic pipeline "
                   "has only m = 1.")
    for r in sorted(_attacked(results), key=_order):
        if len(r.repeats()) < 2:
            continue
        cells = []
        for m in repeats:
            parts = [f"{a} {_fmt(r.balanced_at(a, m).value)} ({_fmt(r.floor(a, m))})" for a in r.cfg.data.private
                     if m in r.repeats()]
            cells.append("; ".join(parts) or "-")
        t.rows.append([r.method_label, r.setting or "-", r.attribute_set, *cells, r.shown])
    return t


def cost_table(results: list[RunResult]) -> Table:
    """What each run cost: its training's seconds beside its judge's (wall and attacker jobs), the judge's budget
    and the attackers' precision, as the runs recorded them."""
    t = Table("Cost: training and the judge, in seconds",
              ["Method", "Setting", "Intended / private", "Training s", "Judge s (wall)", "Attacker jobs s",
               "Jobs / training", "Budget", "Attackers", "Repeats", "Run"],
              note="Seconds as the run and its judge recorded them on their machine (train_summary.json, "
                   "attack.json's timing), so they compare runs made on one machine under one load; a judge that "
                   "resumed counts only its last call's wall seconds. Jobs / training: the attackers' seconds over "
                   "the training's.")
    for r in sorted(_attacked(results), key=_order):
        train_s = r.training_seconds()
        wall, jobs = r.judge_seconds()
        ratio = f"{jobs / train_s:.1f}x" if jobs is not None and train_s else "-"
        budget = ((r.attack or {}).get("budget") or {}).get("name", "-")
        settings = (r.attack or {}).get("settings") or {}
        amp, chosen = settings.get("amp"), settings.get("attackers")
        t.rows.append([r.method_label, r.setting or "-", r.attribute_set,
                       "-" if train_s is None else f"{train_s:.0f}", "-" if wall is None else f"{wall:.0f}",
                       "-" if jobs is None else f"{jobs:.0f}", ratio,
                       budget + (f", attackers in {amp}" if amp and amp != "none" else ""),
                       ", ".join(chosen) if chosen else "every registered", ", ".join(r.repeats()), r.shown])
    return t


def ablation_table(results: list[RunResult]) -> Table:
    """Section 4.2: DeepObfuscator defending against reconstruction only, attributes only, both (+ Encoder)."""
    t = Table("Ablation: what the obfuscator defends against (paper section 4.2)",
              ["Intended / private", "λ1", "Defend", "Intended accuracy [95% CI]",
               "Private accuracy, best attacker [95% CI]", "Reconstruction MS-SSIM, best attacker [95% CI]",
               "PSNR dB, best attacker [95% CI]", "Run"],
              note="Encoder rows are the no-defence reference with the same attributes.")
    groups: dict[tuple, list[RunResult]] = {}
    for r in _attacked(results):
        if r.method == "deepobfuscator":
            p = r.cfg.privacy
            groups.setdefault((r.attribute_set, p.lambda1, p.lambda2), []).append(r)
    encoders = [r for r in _attacked(results) if r.method == "encoder"]
    for (aset, l1, _), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        if len({r.defend for r in runs}) < 2:
            continue
        rows = [("none (Encoder)", r) for r in encoders if r.attribute_set == aset]
        rows += [(DEFEND_LABELS.get(r.defend, r.defend), r) for r in sorted(runs, key=_order)]
        for label, r in rows:
            rec = r.reconstruction()
            t.rows.append([aset, "-" if r.method == "encoder" else f"{l1:g}", label, _task_cells(r), _private_cells(r),
                           metric(rec, "ms_ssim").fmt(), metric(rec, "psnr").fmt(2), r.shown])
    return t


def markdown_table(table: Table) -> str:
    """GitHub-flavoured Markdown for ``table``."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"### {table.title}", ""]
    if not table.rows:
        return "\n".join(lines + ["_(no runs of this kind)_", ""])
    lines.append("| " + " | ".join(esc(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{table.note}_"]
    return "\n".join(lines + [""])
