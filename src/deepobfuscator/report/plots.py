"""Report figures (matplotlib, Agg): the tradeoff scatters (Figure 6: attributes; and reconstruction) and
lambda1 bars (Figures 7-8)."""
from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import RunResult, metric  # noqa: E402
from .tables import TRADEOFF_MARGIN, lambda_runs, reference_accuracy  # noqa: E402

MARKERS = {"deepobfuscator": "*", "encoder": "o", "noisy": "s", "dp": "D", "hybrid": "^", "pan": "v",
           "nopeek": "P", "hardened": "X"}
COLORS = {"deepobfuscator": "tab:red", "encoder": "tab:gray", "noisy": "tab:blue", "dp": "tab:purple",
          "hybrid": "tab:green", "pan": "tab:orange", "nopeek": "tab:brown", "hardened": "tab:cyan"}
_EXTRA = ["X", "h", "<", ">", "p", "8"]


def _style(method: str) -> tuple[str, str]:
    if method not in MARKERS:
        i = zlib.crc32(method.encode()) % len(_EXTRA)  # the same style in every process (str hash is salted)
        return _EXTRA[i], f"C{i}"
    return MARKERS[method], COLORS[method]


def _errs(m) -> list[list[float]] | None:  # matplotlib's [[below], [above]]
    e = m.err
    return None if e is None else [[e[0]], [e[1]]]


def _point(ax, r: RunResult, x, y, seen: set[str]) -> str:
    """Draw run ``r`` at metrics (x, y) with both intervals, its method's marker and (once per method) its legend
    label; returns the colour used."""
    marker, color = _style(r.method)
    label = r.method_label if r.method_label not in seen else None
    seen.add(r.method_label)
    ax.errorbar(x.value, y.value, xerr=_errs(x), yerr=_errs(y), fmt=marker, color=color, ms=10 if marker == "*" else 7,
                capsize=2, elinewidth=0.8, label=label, alpha=0.9)
    return color


def _save(fig, path: Path) -> Path:
    """Write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def tradeoff_scatter(results: list[RunResult], path: Path, margin: float = TRADEOFF_MARGIN) -> Path | None:
    """x: intended-task accuracy, y: best attacker's private balanced accuracy (accuracy for results without it);
    one panel per private attribute, with the label floor (one line per panel when its runs share one attribute set,
    else each run's under its marker), each run's oracle floor and the tradeoff margin."""
    runs = [r for r in results if r.attack]
    attrs: list[str] = []
    for r in runs:
        attrs += [a for a in r.cfg.data.private if a not in attrs]
    if not runs or not attrs:
        return None
    fig, axes = plt.subplots(1, len(attrs), figsize=(9.6 * len(attrs), 4.8), squeeze=False)
    for ax, attr in zip(axes[0], attrs):
        seen: set[str] = set()
        majorities, label_floors = [], []
        task_majorities: dict[str, float] = {}
        points: list[tuple[float, float]] = []
        members = [r for r in runs if attr in r.cfg.data.private]
        balanced = all(r.balanced(attr).value is not None for r in members)
        oracle_drawn = False
        for r in members:
            x, y = r.task_accuracy(), (r.balanced(attr) if balanced else r.privacy(attr))
            if x.value is None or y.value is None:
                continue
            color = _point(ax, r, x, y, seen)
            if r.setting:  # staggered so that runs at (nearly) the same point stay readable
                placed = sum(1 for px, py in points if abs(px - x.value) < 0.01 and abs(py - y.value) < 0.01)
                ax.annotate(r.setting, (x.value, y.value), textcoords="offset points", xytext=(5, 4 + 9 * placed),
                            fontsize=7, color=color)
            points.append((x.value, y.value))
            oracle = r.oracle_floor(attr)
            if balanced and oracle is not None:
                ax.plot([x.value - 0.006, x.value + 0.006], [oracle, oracle], color=color, lw=2, alpha=0.8,
                        label=None if oracle_drawn else "oracle floor (each run's, under its marker)")
                oracle_drawn = True
            if balanced and r.label_floor(attr) is not None:
                label_floors.append((x.value, r.label_floor(attr)))
            if r.majority(attr) is not None:
                majorities.append(r.majority(attr))
            if r.task_majority() is not None:
                task_majorities.setdefault(", ".join(r.cfg.data.task), r.task_majority())
        if balanced:
            ax.axhline(0.5, color="black", ls="--", lw=1, label="chance balanced accuracy (0.5)")
        elif majorities:
            level = sum(majorities) / len(majorities)
            ax.axhline(level, color="black", ls="--", lw=1, label=f"{attr} majority rate ({level:.3f})")
        levels = {round(level, 9) for _, level in label_floors}
        if len(levels) == 1:  # one attribute set (or sets with one floor): one line
            level = label_floors[0][1]
            ax.axhline(level, color="tab:olive", ls="-.", lw=1, label=f"label floor ({level:.3f})")
        else:  # several sets: each has its own floor (an average of them is none of theirs)
            for i, (px, level) in enumerate(label_floors):
                ax.plot([px - 0.012, px + 0.012], [level, level], color="tab:olive", ls="-.", lw=1.5,
                        label=None if i else "label floor (each run's attribute set, under its marker)")
        for aset in sorted({r.attribute_set for r in members}):
            ref = reference_accuracy(members, aset)
            if ref is not None and points:
                left = min(min(px for px, _ in points), ref[0] - margin) - 0.02
                ax.axvspan(left, ref[0] - margin, color="grey", alpha=0.08, lw=0)
                ax.axvline(ref[0] - margin, color="grey", ls="-", lw=0.8,
                           label=f"margin: {ref[1]} accuracy {ref[0]:.3f} - {margin:.3f}")
        for tasks_named, level in sorted(task_majorities.items()):  # one line per intended set
            which = f" of {tasks_named}" if len(task_majorities) > 1 else ""
            ax.axvline(level, color="black", ls=":", lw=1, label=f"intended majority rate{which} ({level:.3f})")
        tasks = sorted({", ".join(r.cfg.data.task) for r in runs if attr in r.cfg.data.private})
        ax.set_xlabel(f"intended-task accuracy ({' | '.join(tasks)})")
        ax.set_ylabel(f"best attacker's {'balanced ' if balanced else ''}accuracy on {attr}")
        ax.set_title(f"Utility vs privacy: {attr} (better: right and down)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel: over no run
    return _save(fig, path)


def reconstruction_scatter(results: list[RunResult], path: Path, margin: float = TRADEOFF_MARGIN) -> Path | None:
    """x: intended-task accuracy, y: best decoder's MS-SSIM (95% intervals), with the best constant image's
    MS-SSIM (the no-information floor) and the margin below the reference run's intended accuracy."""
    runs = [r for r in results if r.attack and r.reconstruction().get("ms_ssim") is not None
            and r.task_accuracy().value is not None]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 4.8))
    seen: set[str] = set()
    floors = []
    for r in runs:
        rec = r.reconstruction()
        x, y = r.task_accuracy(), metric(rec, "ms_ssim")
        color = _point(ax, r, x, y, seen)
        if r.setting:
            ax.annotate(r.setting, (x.value, y.value), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
        floor = (rec.get("floor") or {}).get("ms_ssim")
        if floor is not None:
            floors.append(float(floor))
    if floors:
        level = sum(floors) / len(floors)
        ax.axhline(level, color="tab:olive", ls="-.", lw=1, label=f"best constant image ({level:.3f})")
    for aset in sorted({r.attribute_set for r in runs}):
        ref = reference_accuracy(runs, aset)
        if ref is not None:
            ax.axvline(ref[0] - margin, color="grey", ls="-", lw=0.8,
                       label=f"margin: {ref[1]} accuracy {ref[0]:.3f} - {margin:.3f}")
    ax.set_xlabel("intended-task accuracy")
    ax.set_ylabel("best decoder's MS-SSIM")
    ax.set_title("Utility vs reconstruction (better: right and down)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def lambda_bars(results: list[RunResult], path: Path) -> Path | None:
    """Per attribute set: bars of intended and (best attacker's) private accuracy for each lambda1."""
    runs = lambda_runs(results)
    sets: dict[str, list[RunResult]] = {}
    for r in runs:
        sets.setdefault(r.attribute_set, []).append(r)
    if not sets:
        return None
    ncols = min(3, len(sets))
    nrows = -(-len(sets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(sets):]:
        ax.set_visible(False)
    for ax, (aset, group) in zip(axes.flat, sorted(sets.items())):
        group = sorted(group, key=lambda r: (r.cfg.privacy.lambda1, r.cfg.privacy.lambda2))
        bars = [(f"{a} (intended)", "utility", a) for a in group[0].cfg.data.task]
        bars += [(f"{a} (private)", "privacy", a) for a in group[0].cfg.data.private]
        width = 0.8 / max(1, len(bars))
        for j, (label, kind, attr) in enumerate(bars):
            xs, ys, errs = [], [], [[], []]
            for i, r in enumerate(group):
                m = r.utility(attr) if kind == "utility" else r.privacy(attr)
                if m.value is None:
                    continue
                xs.append(i + (j - (len(bars) - 1) / 2) * width)
                ys.append(m.value)
                e = m.err or (0.0, 0.0)
                errs[0].append(e[0])
                errs[1].append(e[1])
            ax.bar(xs, ys, width, yerr=errs, capsize=2, label=label, hatch="" if kind == "utility" else "//",
                   alpha=0.85)
        for attr in group[0].cfg.data.private:
            maj = [r.majority(attr) for r in group if r.majority(attr) is not None]
            if maj:
                ax.axhline(sum(maj) / len(maj), ls="--", lw=1, color="black")
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels([f"λ1={r.cfg.privacy.lambda1:g}" + (f"\nλ2={r.cfg.privacy.lambda2:g}"
                                                                if r.cfg.privacy.lambda2 != 1 else "") for r in group])
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(aset, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("DeepObfuscator: accuracy per λ1 (dashed: private majority rate)", fontsize=10)
    return _save(fig, path)
