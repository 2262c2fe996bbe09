"""`deepobf tune`: the utility-privacy front for a user's own attributes, searched with a multi-objective sampler.

Each trial draws the method's declared search space (typed parameters with a ``search`` range, plus the config
fields the method lists in ``tunable_config``), trains a run into ``OUT/<study>/trial-NNNN/`` (one folder per study:
two searches in one OUT never share a run) and judges it with fresh
attackers at the quick budget (``RUN/quick/attack.json``). The two objectives are the mean intended accuracy
(maximised) and the best fresh attacker's mean leakage above the floor (minimised). When the trials are done, every
point on the Pareto front is judged again with the full budget (``RUN/attack.json``), which is what `deepobf report`
reads and what the printed front shows. The study lives in a storage like a sweep's, so a search resumes where it
stopped and several workers can share it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..attacks.base import AttackSettings
from ..attacks.suite import run_attack
from ..config import ConfigError, RunConfig, apply_overrides
from ..methods import configure, get_method, train_run
from ..runs import RunDir, RunError
from .study import default_storage, open_storage, redact
from .sweep import directions, holds_other_config, objective_values, run_results

SAMPLERS = ("tpe", "nsga2", "random")
Event = Callable[[str, str], None]


def sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A multi-objective sampler by name: ``tpe`` (good with few trials), ``nsga2``, ``random``."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=4)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"tune sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def suggest(trial: optuna.Trial, key: str, spec: dict[str, Any]) -> Any:
    """One value of a declared search range."""
    if "choices" in spec:
        return trial.suggest_categorical(key, list(spec["choices"]))
    if spec.get("type") == "int":
        return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))


@dataclass
class FrontPoint:
    """One Pareto-optimal trial: its parameters, run directory and judged numbers."""

    trial: int
    params: dict[str, Any]
    run: Path
    intended_accuracy: float
    leakage_above_floor: float
    judge: str  # full (the final judge) or quick


@dataclass
class TuneOutcome:
    """Where the search is and its front."""

    out: Path
    storage: str
    study: str
    trials: int
    front: list[FrontPoint]


class Tuner:
    """Trains and judges the trials of one search."""

    def __init__(self, base: RunConfig, out: Path, storage: str, study: str, sampler_name: str = "tpe",
                 attack: dict[str, Any] | None = None, progress: bool = True, on_event: Event | None = None) -> None:
        self.base, self.out = base, Path(out)
        self.method = get_method(base.method)
        self.space = self.method.search_space()
        if not self.space:
            raise ConfigError(f"method {self.method.name} declares nothing to tune (see deepobf train --method-help "
                              f"{self.method.name})")
        self.attack = dict(attack or {})
        self.progress = progress
        self.emit = on_event or (lambda trial, event: None)
        self.study = optuna.create_study(study_name=study, storage=open_storage(storage), load_if_exists=True,
                                         directions=directions(True), sampler=sampler(sampler_name, base.train.seed))
        self.storage = storage

    def config(self, values: dict[str, Any], name: str) -> RunConfig:
        """The base config with one trial's values (``method.KEY`` for parameters, dotted keys for the rest)."""
        overrides = [f"{key}={value}" for key, value in values.items()]
        cfg = apply_overrides(self.base, overrides)
        cfg.name = name
        return configure(cfg)

    def settings(self, budget: str) -> AttackSettings:
        """The judge's settings at ``budget`` with the search's own overrides."""
        known = {f.name for f in dataclasses.fields(AttackSettings)}
        unknown = set(self.attack) - known
        if unknown:
            raise ConfigError(f"tune --attack: unknown attack option(s) {sorted(unknown)} (known: {sorted(known)})")
        settings = AttackSettings.from_budget(budget, **self.attack)
        settings.validate()
        return settings

    def objective(self, trial: optuna.Trial) -> list[float]:
        """Train the trial's run and judge it at the quick budget."""
        values = {key: suggest(trial, key, spec) for key, spec in self.space.items()}
        run = RunDir(self.out / self.study.study_name / f"trial-{trial.number:04d}")
        trial.set_user_attr("run_dir", str(run.path.resolve()))
        self.emit(f"trial {trial.number}", f"start {values} -> {run.path}")
        cfg = self.config(values, run.path.name)
        if holds_other_config(run, cfg):
            raise RunError(f"{run.path} holds a run with another configuration than trial {trial.number} of study "
                           f"'{self.study.study_name}'; move it away")
        if not run.is_complete():
            train_run(cfg, run.path, resume=run.exists(), progress=self.progress)
        quick = run.path / "quick" / "attack.json"
        if not quick.is_file():
            run_attack(run.path, self.settings("quick"), out=quick, progress=self.progress)
        results = run_results(run, quick)
        trial.set_user_attr("results", results)
        trial.set_user_attr("judge", "quick")
        scores = objective_values(results, attacked=True)
        self.emit(f"trial {trial.number}", f"intended accuracy {scores[0]:.3f}, leakage above floor {scores[1]:+.3f}")
        return scores

    def search(self, trials: int) -> None:
        """Run trials until the study holds ``trials`` finished ones."""
        done = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
        if done < trials:
            self.study.optimize(self.objective, n_trials=trials - done, catch=(Exception,), gc_after_trial=True)

    def judge_front(self) -> None:
        """Judge every Pareto-optimal trial with the full budget (``RUN/attack.json``, which reports then read)."""
        for trial in self.study.best_trials:
            run = Path(trial.user_attrs["run_dir"])
            if not (run / "attack.json").is_file():
                self.emit(f"trial {trial.number}", "full judge of a front point")
                run_attack(run, self.settings("full"), progress=self.progress)

    def front(self) -> list[FrontPoint]:
        """The Pareto front, with the full judge's numbers where it ran (the run's ``attack.json``)."""
        points = []
        for trial in sorted(self.study.best_trials, key=lambda t: -t.values[0]):
            run = RunDir(Path(trial.user_attrs["run_dir"]))
            judged = (run.path / "attack.json").is_file()
            results = run_results(run) if judged else trial.user_attrs.get("results") or {}
            judge = "full" if judged else "quick"
            acc, leak = objective_values(results, attacked=True)
            points.append(FrontPoint(trial.number, dict(trial.params), Path(trial.user_attrs["run_dir"]), acc, leak,
                                     judge))
        return points


def run_tune(base: RunConfig, out: Path, trials: int, storage: str | None = None, study: str | None = None,
             sampler_name: str = "tpe", attack: dict[str, Any] | None = None, final_judge: bool = True,
             progress: bool = True, on_event: Event | None = None) -> TuneOutcome:
    """Search ``base.method``'s declared ranges for the utility-privacy front of ``base``'s attributes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out)
    name = study or f"tune-{base.method}-{'+'.join(base.data.task)}-vs-{'+'.join(base.data.private) or 'none'}"
    tuner = Tuner(base, out, storage, name, sampler_name, attack, progress, on_event)
    tuner.search(trials)
    if final_judge:
        tuner.judge_front()
    finished = len(tuner.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return TuneOutcome(out, redact(storage), name, finished, tuner.front())
