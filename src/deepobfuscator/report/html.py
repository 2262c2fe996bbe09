"""Assemble the comparison report: one self-contained HTML page (images embedded) and a Markdown file."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..utils import atomic_write_json, atomic_write_text
from .plots import lambda_bars, reconstruction_scatter, tradeoff_scatter
from .results import RunResult, expand_run_dirs, load_result
from .tables import (
    TRADEOFF_MARGIN, Table, ablation_table, averaging_table, best_tradeoff, cost_table, lambda_table, leakage,
    markdown_table, pareto_front, reconstruction_table, score, tradeoff_table,
)

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f0f0f0}td.run{font-family:monospace;font-size:11px;color:#555}
img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}.note{font-size:12px;color:#555}
.grids{display:flex;flex-wrap:wrap;gap:1em}.grids figure{max-width:640px}"""


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote."""

    html: Path
    markdown: Path
    summary: Path
    figures: list[Path]
    runs: int
    warnings: list[str]


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_table(table: Table) -> str:
    if not table.rows:
        return f"<h3>{html.escape(table.title)}</h3><p class='note'>(no runs of this kind)</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td class='run'>{html.escape(c)}</td>" if table.columns[i] == "Run"
                         else f"<td>{html.escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in table.rows)
    note = f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""
    return f"<h3>{html.escape(table.title)}</h3><table><tr>{head}</tr>{body}</table>{note}"


def _verdict(results: list[RunResult], margin: float) -> list[str]:
    lines = []
    front = pareto_front(results)
    for aset, r, leak, ref, what in best_tradeoff(results, margin):
        others = sorted(x.label for x in results if x.attribute_set == aset and str(x.path) in front)
        lines.append(f"{aset}: best tradeoff {r.label} ({r.shown}): least leakage above the floor ({leak:.3f}) among "
                     f"runs whose intended accuracy is within {margin:.3f} of the {what}'s ({ref:.3f}); "
                     f"Pareto front: {', '.join(others) or '-'}")
    return lines


def _shown_paths(results: list[RunResult]) -> None:
    """Write run paths relative to the folder that holds them (a sweep's output folder), for committed reports."""
    if not results:
        return
    base = Path(os.path.commonpath([str(r.path.resolve().parent) for r in results]))
    for r in results:
        r.shown = r.path.resolve().relative_to(base).as_posix()


def build_report(run_dirs: list[Path], out: Path, title: str = "DeepObfuscator: utility-privacy comparison",
                 margin: float = TRADEOFF_MARGIN) -> ReportFiles:
    """Read the runs, draw the figures, write ``report.html`` (self-contained), ``report.md`` and ``report.json``.

    The best tradeoff is the run with the least leakage above the floor among runs whose intended accuracy is
    within ``margin`` of the Encoder's; run paths are written relative to the folder holding the runs.
    """
    paths = expand_run_dirs([Path(p) for p in run_dirs])
    results = [load_result(p) for p in paths]
    _shown_paths(results)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    warnings = [f"{r.shown}: no attack.json (judge it with `deepobf attack` first); left out of figures and tables"
                for r in results if not r.attack]
    warnings += [f"{r.shown}: {', '.join(r.stalled())} stayed at the majority rate in training (train_summary.json): "
                 "this run learned nothing of it, whatever its privacy numbers say" for r in results if r.stalled()]
    figures: list[tuple[str, Path]] = []
    scatter = tradeoff_scatter(results, out / "figures" / "tradeoff.png", margin)
    if scatter:
        figures.append(("Utility-privacy tradeoff (paper Figure 6): each marker one run; dashed: majority rate of "
                        "the private attribute (chance 0.5 when the y axis is balanced accuracy); dash-dot: label "
                        "floor; short bars under markers: each run's oracle floor; dotted: majority rate of the "
                        f"intended task; shaded: outside the {margin:.3f} margin below the Encoder's intended "
                        "accuracy; bars: 95% intervals.", scatter))
    recon = reconstruction_scatter(results, out / "figures" / "reconstruction.png", margin)
    if recon:
        figures.append(("Utility vs reconstruction: the best decoder's MS-SSIM per run; dash-dot: the best constant "
                        "image (no information); grey line: the margin below the Encoder's intended accuracy; "
                        "bars: 95% intervals.", recon))
    bars = lambda_bars(results, out / "figures" / "lambda1.png")
    if bars:
        figures.append(("DeepObfuscator accuracy per λ1 and attribute set (paper Figures 7-8).", bars))
    grids: list[tuple[RunResult, Path]] = []
    (out / "grids").mkdir(exist_ok=True)
    for r in results:
        if r.grid:
            target = out / "grids" / f"{r.name}.png"
            shutil.copyfile(r.grid, target)
            grids.append((r, target))
    tables = [tradeoff_table(results), averaging_table(results), lambda_table(results), reconstruction_table(results),
              ablation_table(results), cost_table(results)]
    verdict = _verdict(results, margin)
    stamp = _dt.datetime.now().isoformat(timespec="seconds")

    # ---------------------------------------------------------------- HTML
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>{len(results)} run(s), generated {stamp}. Every attack number is the best attacker "
             "of the attack suite on the evaluation split, with its 95% interval in brackets.</p>"]
    if verdict:
        parts.append("<h2>Best tradeoff</h2><ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in verdict) + "</ul>")
    if warnings:
        parts.append("<ul>" + "".join(f"<li class='note'>{html.escape(w)}</li>" for w in warnings) + "</ul>")
    parts.append("<h2>Figures</h2>")
    for caption, path in figures:
        parts.append(f"<figure><img src='{_data_uri(path)}' alt='{html.escape(path.stem)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Tables</h2>" + "".join(_html_table(t) for t in tables))
    parts.append("<h2>Reconstructions per method (paper Figures 4 and 10)</h2><div class='grids'>")
    for r, path in grids:
        parts.append(f"<figure><img src='{_data_uri(path)}' alt='{html.escape(r.name)}'><figcaption>"
                     f"{html.escape(r.label)} — {html.escape(r.attribute_set)}<br><code>{html.escape(r.shown)}"
                     "</code></figcaption></figure>")
    parts.append("</div></body></html>")
    html_path = out / "report.html"
    atomic_write_text(html_path, "\n".join(parts))

    # ---------------------------------------------------------------- Markdown
    md = [f"# {title}", "", f"{len(results)} run(s), generated {stamp}. Attack numbers: best attacker on the "
          "evaluation split, 95% interval in brackets.", ""]
    if verdict:
        md += ["## Best tradeoff", ""] + [f"- {v}" for v in verdict] + [""]
    md += [f"- {w}" for w in warnings] + ([""] if warnings else [])
    md += ["## Figures", ""]
    for caption, path in figures:
        md += [f"![{path.stem}]({path.relative_to(out).as_posix()})", "", f"_{caption}_", ""]
    md += ["## Tables", ""] + [markdown_table(t) for t in tables]
    md += ["## Reconstructions per method (paper Figures 4 and 10)", ""]
    for r, path in grids:
        md += [f"**{r.label}** — {r.attribute_set} (`{r.shown}`)", "", f"![{r.name}]({path.relative_to(out).as_posix()})", ""]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    # ---------------------------------------------------------------- JSON
    summary = out / "report.json"
    atomic_write_json(summary, {
        "title": title, "generated": stamp, "warnings": warnings, "best_tradeoff": verdict,
        "margin": margin,
        "runs": [{"run": r.shown, "method": r.method, "label": r.label, "attributes": r.attribute_set,
                  "intended_accuracy": r.task_accuracy().value, "score": score(r), "leakage_above_floor": leakage(r),
                  "oracle_floor": {a: r.oracle_floor(a) for a in r.cfg.data.private},
                  "label_floor": {a: r.label_floor(a) for a in r.cfg.data.private},
                  "private_accuracy": {a: r.privacy(a).value for a in r.cfg.data.private},
                  "private_balanced_accuracy_by_m": {a: {m: r.balanced_at(a, m).value for m in r.repeats()}
                                                     for a in r.cfg.data.private},
                  "majority_rate": {a: r.majority(a) for a in r.cfg.data.private}}
                 for r in results if r.attack],
    })
    return ReportFiles(html_path, md_path, summary, [p for _, p in figures], len(results), warnings)
