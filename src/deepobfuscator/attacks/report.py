"""Human-readable outputs of an attack: the Markdown tables and the reconstruction grid (paper Figure 4 style)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..utils import atomic_write_bytes

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


def render_markdown(result: dict[str, Any]) -> str:
    """The attack result as Markdown tables (95% intervals in brackets; best attacker in bold)."""
    lines = [f"# Attack evaluation: {result['run']}", "",
             f"Evaluated on the **{result['split']}** split of `{result['dataset']}` ({result['data_root']}), "
             f"{result['eval_images']} images; attackers trained from scratch on "
             f"{result['attacker_train']['images']} images of `{result['attacker_train']['dataset']}` "
             f"({result['attacker_train']['root']}, split {result['attacker_train']['split']}). "
             f"Seed {result['settings']['seed']}.", ""]
    header = "| {} | accuracy | balanced accuracy | ROC AUC | majority rate | n |"
    rule = "|---|---|---|---|---|---|"
    lines += ["## Utility (deployed C, intended attributes)", "", header.format("attribute"), rule]
    lines += [_classification_row(name, r) for name, r in result["utility"].items()] or ["| (none) | | | | | |"]
    lines += ["", "## Attribute inference (private attributes; best = highest balanced accuracy)", ""]
    for attr, entry in result["privacy"].items():
        lines += [f"### {attr}", "", header.format("attacker"), rule]
        for name, r in entry["per_attacker"].items():
            lines.append(_classification_row(name, r, bold=name == entry["best_attacker"]))
        lines.append("")
    if not result["privacy"]:
        lines += ["(no private attribute evaluated)", ""]
    rec, reid = result["reconstruction"], result["reid"]
    lines += ["## Reconstruction and re-identification (best = highest MS-SSIM)", "",
              f"Re-identification: top-1 among {4} candidates (chance {reid['chance']:.2f}), "
              f"similarity {reid['similarity']}.", "",
              "| attacker | MS-SSIM | PSNR (dB) | re-ID same image | re-ID same person | n |",
              "|---|---|---|---|---|---|"]
    for name, r in rec["per_attacker"].items():
        rr = reid["per_attacker"].get(name, {})
        cells = [name, f"{_num(r['ms_ssim'])}{_ci(r['ms_ssim_ci95'])}", f"{_num(r['psnr'], 2)}{_ci(r['psnr_ci95'], 2)}",
                 f"{_num(rr.get('same_image', {}).get('rate'))}{_ci(rr.get('same_image', {}).get('ci95'))}",
                 f"{_num(rr.get('same_person', {}).get('rate'))}{_ci(rr.get('same_person', {}).get('ci95'))}",
                 str(r["n"])]
        if name == rec["best_attacker"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if not rec["per_attacker"]:
        lines.append("| (none) | | | | | |")
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


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
