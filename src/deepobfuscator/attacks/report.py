"""Human-readable outputs of an attack: the Markdown tables and the reconstruction grid (paper Figure 4 style)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..utils import atomic_write_bytes
from .floors import larger_floor

CELL_MIN = 64  # grid cells are enlarged (nearest neighbour) to at least this many pixels high
LABEL_WIDTH = 84


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(bounds: list | None, digits: int = 3) -> str:
    if not bounds or bounds[0] is None:
        return ""
    return f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _classification_row(label: str, r: dict[str, Any], bold: bool = False) -> str:
    cells = [label, f"{_num(r.get('accuracy'))}{_ci(r.get('accuracy_ci95'))}",
             f"{_num(r.get('balanced_accuracy'))}{_ci(r.get('balanced_accuracy_ci95'))}",
             f"{_num(r.get('auc'))}{_ci(r.get('auc_ci95'))}", _num(r.get("majority_rate")), str(r.get("n", ""))]
    if bold:
        cells = [f"**{c}**" if c else c for c in cells]
    return "| " + " | ".join(cells) + " |"


def _epochs(training: dict[str, Any] | None) -> str:
    if training and "start" in training:  # the inversion's choice, made on the attacker's validation images
        return f"start {training['start']}, {training['steps']} steps"
    if not training or training.get("epochs") is None:
        return ""
    return f"{training['epochs']} (best {training.get('best_epoch')})"


def _seed_spread(per: dict[str, dict[str, Any]], what: str) -> list[str]:
    """Where attackers were trained with several seeds (``--seeds``): what each table row is, and the spread."""
    parts, seeds = [], None
    for name, r in per.items():
        spread = r.get("seeds") or {}
        if len(spread.get("seeds") or []) > 1 and spread.get("mean") is not None:
            seeds = seeds or spread["seeds"]
            parts.append(f"{name} {spread['min']:.3f}-{spread['max']:.3f} (mean {spread['mean']:.3f}, "
                         f"std {spread['std']:.3f})")
    if not parts:
        return []
    return ["", f"Attacker seeds {', '.join(map(str, seeds))}: each row is the seed best for the attacker on these "
                f"images (chosen on them, so an upper estimate of one training); {what} over the seeds: "
            + "; ".join(parts) + "."]


def _attribute_section(attr: str, entry: dict[str, Any]) -> list[str]:
    lines = [f"### {attr}", ""]
    label, oracle = entry.get("label_floor"), entry.get("oracle_floor")
    floors = []
    if label:
        floors.append(f"label floor {_num(label.get('balanced_accuracy'))} (from {', '.join(label.get('from', []))})")
    if oracle:
        floors.append(f"oracle floor {_num(oracle.get('balanced_accuracy'))} (attacker on the deployed C's logits)")
    if floors:
        lines += ["Balanced-accuracy floors: " + "; ".join(floors) + f". Leakage of the best attacker above the "
                  f"oracle floor: {_num(entry.get('leakage_above_oracle'))}, above the label floor: "
                  f"{_num(entry.get('leakage_above_label'))}.", ""]
    lines += ["| attacker | accuracy | balanced accuracy | ROC AUC | majority rate | n | epochs |",
              "|---|---|---|---|---|---|---|"]
    for name, r in entry["per_attacker"].items():
        row = _classification_row(name + (" (floor)" if r.get("floor") else ""), r, bold=name == entry["best_attacker"])
        lines.append(row[:-1] + f"| {_epochs(r.get('training'))} |")
    lines += _seed_spread(entry["per_attacker"], "balanced accuracy")
    within = entry.get("within") or {}
    for task, classes in within.items():
        cells = ", ".join(f"{task}={c}: {_num(v.get('balanced_accuracy'))} (majority {_num(v.get('majority_rate'))}, "
                          f"n={v.get('n')})" for c, v in classes.items())
        lines += ["", f"Best attacker within each {task} class: {cells}."]
    return lines + [""]


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _averaged(m: str, e: dict[str, Any]) -> str:
    """One repeat count's best attacker against that count's own floor (C's answers averaged as the features are)."""
    floor, ba = larger_floor(e), e.get("balanced_accuracy")
    above = None if floor is None or ba is None else ba - floor
    return f"m = {m}: {_num(ba)} ({_signed(above)} above its floor {_num(floor)})"


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """The answer first: per private attribute the best fresh attacker against its floor (and with averaged queries),
    the best reconstruction against the constant-image floor, re-identification and the utility kept."""
    lines = []
    repeated = result.get("repeated") or {}
    for attr, e in result["privacy"].items():
        floor = larger_floor(e)
        ba = e.get("balanced_accuracy")
        if not e.get("best_attacker"):
            lines.append(f"- **{attr}**: no attribute attacker was run (`--attackers` chose none); floor {_num(floor)}.")
            continue
        above = None if floor is None or ba is None else ba - floor
        averaged = "; ".join(_averaged(m, r["privacy"][attr]) for m, r in repeated.items() if attr in r.get("privacy", {}))
        lines.append(f"- **{attr}**: best fresh attacker {e.get('best_attacker')} reads it at balanced accuracy "
                     f"{_num(ba)}{_ci(e.get('balanced_accuracy_ci95'))}; floor {_num(floor)} (what the intended "
                     f"labels or C's answers already imply) -> **{_signed(above)}** above it"
                     + (f"; averaged queries {averaged}" if averaged else "") + ".")
    rec = result["reconstruction"]
    if rec.get("best_attacker"):
        floor = rec.get("floor") or {}
        lines.append(f"- **Reconstruction**: best decoder {rec['best_attacker']} MS-SSIM {_num(rec.get('ms_ssim'))}"
                     f"{_ci(rec.get('ms_ssim_ci95'))}; best constant image {_num(floor.get('ms_ssim'))} -> "
                     f"**{_signed(rec.get('ms_ssim_above_floor'))}** above it.")
    reid = result.get("reid") or {}
    if reid.get("same_image") is not None:
        lines.append(f"- **Re-identification** (pick the true face among 4 from its reconstruction): same image "
                     f"{_num(reid['same_image'])} (chance {reid['chance']:.2f}, constant-image floor "
                     f"{_num(reid.get('same_image_floor'))}).")
    for attr, u in result["utility"].items():
        lines.append(f"- **Utility**: {attr} accuracy {_num(u.get('accuracy'))}{_ci(u.get('accuracy_ci95'))} "
                     f"(majority rate {_num(u.get('majority_rate'))}).")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """The attack result as Markdown tables (95% intervals in brackets; best attacker in bold; floors marked)."""
    train = result["attacker_train"]
    lines = [f"# Attack evaluation: {result['run']}", "",
             f"Evaluated on the **{result['split']}** split of `{result['dataset']}` ({result['data_root']}), "
             f"{result['eval_images']} images; attackers trained from scratch on "
             f"{train['images']} images of `{train['dataset']}` "
             f"({train['root']}, split {train['split']}"
             + (f"; {train['val_images']} held out for early stopping" if train.get("val_images") else "")
             + f"). Seed {result['settings']['seed']}."
             + (" The deployed pipeline is **stochastic** (fresh draws per epoch and at evaluation; "
                + ("fast path: cached noise-free prefixes with the declared noise, checked against the pipeline)."
                   if (result.get("sampling") or {}).get("path") == "fast" else "black-box path).")
                if result.get("stochastic") else ""), ""]
    lines += ["## Verdict", "", *verdict_lines(result), ""]
    lines += _averaging_table(result)
    header = "| {} | accuracy | balanced accuracy | ROC AUC | majority rate | n |"
    rule = "|---|---|---|---|---|---|"
    lines += ["## Utility (deployed C, intended attributes)", "", header.format("attribute"), rule]
    lines += [_classification_row(name, r) for name, r in result["utility"].items()] or ["| (none) | | | | | |"]
    lines += ["", "## Attribute inference (private attributes; best = highest balanced accuracy)", ""]
    for attr, entry in result["privacy"].items():
        lines += _attribute_section(attr, entry)
    if not result["privacy"]:
        lines += ["(no private attribute evaluated)", ""]
    rec, reid = result["reconstruction"], result["reid"]
    lines += ["## Reconstruction and re-identification (best = highest MS-SSIM)", "",
              f"Re-identification: top-1 among {4} candidates (chance {reid['chance']:.2f}), "
              f"similarity {reid['similarity']}."]
    if rec.get("floor"):
        lines += [f"Reconstruction floor (best constant image, no features): MS-SSIM {_num(rec['floor']['ms_ssim'])} "
                  f"({rec['floor']['attacker']}); the best attacker is {_num(rec.get('ms_ssim_above_floor'))} above it."]
    for name, sub in (rec.get("subset_attackers") or {}).items():
        if sub.get("compared_with"):
            lines += [f"{name} is scored on {sub['n']} query images only, so it is not ranked with the others: "
                      f"{_num(sub.get('ms_ssim'))} there against {_num(sub.get('compared_ms_ssim'))} for "
                      f"{sub['compared_with']} on the same images (gain {_num(sub.get('gain'))}{_ci(sub.get('gain_ci95'))})."]
        else:
            lines += [f"{name} is scored on {sub.get('n')} query images only, so it is not ranked with the others."]
    lines += ["", "| attacker | MS-SSIM | PSNR (dB) | re-ID same image | re-ID same person | n | epochs |",
              "|---|---|---|---|---|---|---|"]
    for name, r in rec["per_attacker"].items():
        rr = reid["per_attacker"].get(name, {})
        cells = [name + (" (floor)" if r.get("floor") else ""), f"{_num(r['ms_ssim'])}{_ci(r['ms_ssim_ci95'])}",
                 f"{_num(r['psnr'], 2)}{_ci(r['psnr_ci95'], 2)}",
                 f"{_num(rr.get('same_image', {}).get('rate'))}{_ci(rr.get('same_image', {}).get('ci95'))}",
                 f"{_num(rr.get('same_person', {}).get('rate'))}{_ci(rr.get('same_person', {}).get('ci95'))}",
                 str(r["n"]), _epochs(r.get("training"))]
        if name == rec["best_attacker"]:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if not rec["per_attacker"]:
        lines.append("| (none) | | | | | | |")
    lines += _seed_spread(rec["per_attacker"], "MS-SSIM")
    timing = result.get("timing")
    if timing:
        lines += ["", f"Time: {timing['total_s']:.0f} s in all ({timing['prepare_s']:.0f} s preparing, "
                  f"{timing['jobs_s']:.0f} s of attacker jobs on {timing['workers']} worker(s) x "
                  f"{timing['threads_per_worker']} thread(s)); budget `{(result.get('budget') or {}).get('name')}`; "
                  f"attackers in {PRECISION_NAMES.get((result.get('settings') or {}).get('amp', 'none'), 'float32')}."]
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


PRECISION_NAMES = {"none": "float32", "bf16": "bf16 autocast (float32 weights and losses)"}


def _averaging_table(result: dict[str, Any]) -> list[str]:
    """Single queries beside m-averaged ones and the averaging limit: best attacker per private attribute (balanced
    accuracy, leakage above the larger floor) and best reconstruction."""
    repeated = result.get("repeated") or {}
    if not repeated:
        return []
    columns = ["1", *repeated]
    views = {"1": {"privacy": result["privacy"], "reconstruction": result["reconstruction"]}, **repeated}
    lines = ["## Averaged queries (m = queries of the same image averaged; inf = the averaging limit)", "",
             "| | " + " | ".join(f"m = {m}" for m in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for attr in result["privacy"]:
        cells = []
        for m in columns:
            e = views[m]["privacy"].get(attr, {})
            floor = larger_floor(e)
            above = None if floor is None or e.get("balanced_accuracy") is None else e["balanced_accuracy"] - floor
            cells.append(f"{_num(e.get('balanced_accuracy'))} ({e.get('best_attacker')}; "
                         f"{'+' if (above or 0) >= 0 else ''}{_num(above)} above floor)")
        lines.append(f"| {attr} balanced accuracy | " + " | ".join(cells) + " |")
    cells = [f"{_num(views[m]['reconstruction'].get('ms_ssim'))} ({views[m]['reconstruction'].get('best_attacker')})"
             for m in columns]
    lines += ["| best reconstruction MS-SSIM | " + " | ".join(cells) + " |", ""]
    return lines


def _label(text: str, height: int) -> np.ndarray:
    canvas = Image.new("RGB", (LABEL_WIDTH, height), "white")
    ImageDraw.Draw(canvas).text((4, max(0, height // 2 - 6)), text[:13], fill="black")
    return np.asarray(canvas)


def grid_image(raw: np.ndarray, rows: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Raw images (top row) above each attacker's reconstructions; uint8 ``[H', W', 3]``; short rows are padded."""
    n, h, w = raw.shape[:3]
    scale = max(1, -(-CELL_MIN // h))
    cell_h, cell_w = h * scale, w * scale

    def strip(label: str, images: np.ndarray) -> np.ndarray:
        cells = [np.kron(img, np.ones((scale, scale, 1), dtype=np.uint8)) for img in images[:n]]
        cells += [np.full((cell_h, cell_w, 3), 255, np.uint8)] * (n - len(cells))
        spaced = []
        for cell in cells:
            spaced += [cell, np.full((cell_h, 2, 3), 255, np.uint8)]
        return np.concatenate([_label(label, cell_h)] + spaced, axis=1)

    strips = [strip("raw", raw)] + [strip(label, images) for label, images in rows]
    gap = np.full((2, strips[0].shape[1], 3), 255, np.uint8)
    out = []
    for s in strips:
        out += [s, gap]
    return np.concatenate(out[:-1], axis=0)


def save_grid(path: Path, raw: np.ndarray, rows: list[tuple[str, np.ndarray]]) -> None:
    """Write :func:`grid_image` as PNG (atomically)."""
    buf = io.BytesIO()
    Image.fromarray(grid_image(raw, rows)).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
