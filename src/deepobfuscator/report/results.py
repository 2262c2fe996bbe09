"""Read run directories (config.yaml, attack.json, recon_grid.png) into comparable results."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..attacks.floors import larger_floor
from ..config import RunConfig
from ..methods import METHODS
from ..runs import RunDir, RunError

DEFEND_LABELS = {"both": "both", "reconstruction": "reconstruction only", "attributes": "attributes only",
                 "none": "none"}


@dataclass(frozen=True)
class Metric:
    """A number with its 95% interval (either bound may be missing)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    def fmt(self, digits: int = 3) -> str:
        """``0.812 [0.790, 0.833]`` (or just the value, or ``-``)."""
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "-"
        text = f"{self.value:.{digits}f}"
        if self.lo is not None and self.hi is not None:
            text += f" [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"
        return text

    @property
    def err(self) -> tuple[float, float] | None:
        """(below, above) distances for error bars, or None."""
        if self.value is None or self.lo is None or self.hi is None:
            return None
        return max(0.0, self.value - self.lo), max(0.0, self.hi - self.value)


def metric(d: dict[str, Any] | None, key: str) -> Metric:
    """``d[key]`` with its interval ``d[key + '_ci95']`` (or ``d['ci95']``)."""
    if not isinstance(d, dict) or d.get(key) is None:
        return Metric(None)
    ci = d.get(f"{key}_ci95", d.get("ci95"))
    lo, hi = (ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None))
    return Metric(float(d[key]), None if lo is None else float(lo), None if hi is None else float(hi))


def _num(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


@dataclass
class RunResult:
    """One run directory's configuration and attack results."""

    path: Path
    cfg: RunConfig
    attack: dict[str, Any] | None
    grid: Path | None
    shown: str = ""  # the path as written in reports (relative to the folder of the runs)
    training: dict[str, Any] | None = None  # train_summary.json, when the run wrote one

    def __post_init__(self) -> None:
        self.shown = self.shown or str(self.path)

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.name

    @property
    def method(self) -> str:
        """Registered method name (``deepobfuscator``, ``dp``, ...)."""
        return self.cfg.method

    @property
    def method_label(self) -> str:
        """Display name of the method."""
        return METHODS.get(self.method).label if self.method in METHODS else self.method

    @property
    def defend(self) -> str:
        """Which attacks the adversarial stage defends against (DeepObfuscator/PAN)."""
        return self.cfg.privacy.defend

    @property
    def uses_lambda(self) -> bool:
        """True for methods with an adversarial stage weighted by lambda1/lambda2."""
        return self.method in METHODS and METHODS.get(self.method).uses_lambda and self.cfg.train.epochs_adversarial > 0

    @property
    def setting(self) -> str:
        """The parameters that distinguish this run within its method."""
        b, p = self.cfg.params, self.cfg.privacy
        parts = []
        if self.uses_lambda:
            parts.append(f"λ1={_num(p.lambda1)}")
            if p.lambda2 != 1.0:
                parts.append(f"λ2={_num(p.lambda2)}")
            if p.defend != "both":
                parts.append(f"defend {DEFEND_LABELS.get(p.defend, p.defend)}")
        for key, sym in (("epsilon", "ε"), ("sigma", "σ"), ("weight", "α")):
            if key in b:
                parts.append(f"{sym}={_num(b[key])}")
        return ", ".join(parts)

    @property
    def label(self) -> str:
        """Method and setting, e.g. ``DeepObfuscator λ1=10``."""
        return f"{self.method_label} {self.setting}".strip()

    @property
    def attribute_set(self) -> str:
        """``Smiling / Male``: intended / private attributes."""
        return f"{', '.join(self.cfg.data.task)} / {', '.join(self.cfg.data.private) or '-'}"

    # ----------------------------------------------------------------- numbers
    def utility(self, attr: str) -> Metric:
        """Service-classifier accuracy on intended attribute ``attr``."""
        return metric((self.attack or {}).get("utility", {}).get(attr), "accuracy")

    def task_accuracy(self) -> Metric:
        """Intended-task accuracy (mean over intended attributes; interval only for a single one)."""
        values = [self.utility(a) for a in self.cfg.data.task]
        if len(values) == 1 or any(v.value is None for v in values):
            return values[0] if len(values) == 1 else Metric(None)
        return Metric(sum(v.value for v in values) / len(values))  # type: ignore[misc]

    def task_majority(self) -> float | None:
        """Mean majority rate of the intended attributes on the evaluation split."""
        rates = [(self.attack or {}).get("utility", {}).get(a, {}).get("majority_rate") for a in self.cfg.data.task]
        rates = [r for r in rates if r is not None]
        return sum(rates) / len(rates) if rates else None

    def privacy(self, attr: str) -> Metric:
        """Best attacker's accuracy on private attribute ``attr``."""
        return metric((self.attack or {}).get("privacy", {}).get(attr), "accuracy")

    def privacy_entry(self, attr: str) -> dict[str, Any]:
        """The raw privacy record of ``attr`` (best_attacker, majority_rate, per_attacker...)."""
        return (self.attack or {}).get("privacy", {}).get(attr, {}) or {}

    def majority(self, attr: str) -> float | None:
        """Majority rate of private attribute ``attr`` on the evaluation split."""
        value = self.privacy_entry(attr).get("majority_rate")
        return None if value is None else float(value)

    def balanced(self, attr: str) -> Metric:
        """Best attacker's balanced accuracy on private attribute ``attr`` (schema 1 and 2)."""
        return metric(self.privacy_entry(attr), "balanced_accuracy")

    def oracle_floor(self, attr: str) -> float | None:
        """Balanced accuracy of the oracle attacker on the deployed C's logits (schema 2; None before)."""
        floor = self.privacy_entry(attr).get("oracle_floor") or {}
        return None if floor.get("balanced_accuracy") is None else float(floor["balanced_accuracy"])

    def label_floor(self, attr: str) -> float | None:
        """Balanced accuracy of the best predictor from the intended labels alone (schema 2; None before)."""
        floor = self.privacy_entry(attr).get("label_floor") or {}
        return None if floor.get("balanced_accuracy") is None else float(floor["balanced_accuracy"])

    def leakage_above_floor(self, attr: str) -> tuple[float, str] | None:
        """The best attacker's leakage on ``attr`` above the strongest floor available, and which floor:
        balanced accuracy minus the larger of the label and oracle floors (schema 2; the judge's verdict), else
        minus chance (0.5, schema 1), else accuracy minus the majority rate (results without balanced accuracy)."""
        ba = self.balanced(attr).value
        floor = self.floor(attr)
        if ba is not None and floor is not None:
            return ba - floor, "floor"
        if ba is not None:
            return ba - 0.5, "chance"
        acc, maj = self.privacy(attr).value, self.majority(attr)
        if acc is None or maj is None:
            return None
        return acc - maj, "majority"

    def repeats(self) -> list[str]:
        """Repeat counts attacked (``1`` and, for a stochastic pipeline, e.g. ``8`` and ``inf``)."""
        return ["1", *((self.attack or {}).get("repeated") or {})]

    def balanced_at(self, attr: str, m: str) -> Metric:
        """Best attacker's balanced accuracy on ``attr`` when each image's features are averaged over ``m`` queries
        (``inf``: the averaging limit)."""
        return metric(self.privacy_entry_at(attr, m), "balanced_accuracy")

    def privacy_entry_at(self, attr: str, m: str) -> dict[str, Any]:
        """The privacy record of ``attr`` at repeat count ``m`` (``1``: :meth:`privacy_entry`; else the judge's
        ``repeated`` entry), or {} where it was not attacked."""
        if m == "1":
            return self.privacy_entry(attr)
        return ((self.attack or {}).get("repeated") or {}).get(m, {}).get("privacy", {}).get(attr) or {}

    def floor(self, attr: str, m: str = "1") -> float | None:
        """The larger of the label and oracle floors of ``attr`` at repeat count ``m`` (None when neither was
        measured; :func:`~deepobfuscator.attacks.floors.larger_floor`)."""
        return larger_floor(self.privacy_entry_at(attr, m))

    def reconstruction(self) -> dict[str, Any]:
        """The raw reconstruction record (best_attacker, ms_ssim, psnr, per_attacker)."""
        return (self.attack or {}).get("reconstruction", {}) or {}

    def leakage(self) -> float | None:
        """Mean over private attributes of the best attacker's advantage over the majority rate, in [0, 1]."""
        vals = []
        for attr in self.cfg.data.private:
            acc, maj = self.privacy(attr).value, self.majority(attr)
            if acc is None or maj is None:
                return None
            vals.append(max(0.0, acc - maj) / max(1e-9, 1.0 - maj))
        return sum(vals) / len(vals) if vals else None

    def training_seconds(self) -> float | None:
        """Seconds the run's training took (train_summary.json), or None."""
        value = (self.training or {}).get("seconds")
        return float(value) if value is not None else None

    def stalled(self) -> list[str]:
        """Intended attributes the training left at their majority rate (train_summary.json's ``stalled``)."""
        return [str(a) for a in (self.training or {}).get("stalled") or []]

    def judge_seconds(self) -> tuple[float | None, float | None]:
        """The attack's wall seconds and its attacker jobs' seconds (attack.json's timing), None where not recorded."""
        timing = (self.attack or {}).get("timing") or {}
        total = timing.get("total_s", (self.attack or {}).get("seconds"))
        jobs = timing.get("jobs_s")
        return (None if total is None else float(total)), (None if jobs is None else float(jobs))

    def usefulness(self) -> float | None:
        """Intended-task accuracy's advantage over the majority rate, in [0, 1] (negative if below it)."""
        acc, maj = self.task_accuracy().value, self.task_majority()
        if acc is None or maj is None:
            return None
        return (acc - maj) / max(1e-9, 1.0 - maj)


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths``; a folder holding runs (e.g. a sweep's OUT) stands for all of them."""
    out: list[Path] = []
    for path in map(Path, paths):
        if (path / "config.yaml").is_file():
            out.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file()) if path.is_dir() else []
        if not children:
            raise RunError(f"{path}: not a run directory (no config.yaml) and holds no run directories")
        out.extend(children)
    return out


def load_result(path: Path) -> RunResult:
    """Read one run directory."""
    run = RunDir(Path(path))
    cfg = run.read_config()
    attack_path = run.path / "attack.json"
    attack = None
    if attack_path.is_file():
        try:
            attack = json.loads(attack_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{attack_path}: not valid JSON ({exc})") from exc
    grid = run.path / "recon_grid.png"
    try:
        training = run.read_summary() or None
    except RunError:  # a damaged summary: the report still renders, without the training time
        training = None
    return RunResult(run.path, cfg, attack, grid if grid.is_file() else None, training=training)
