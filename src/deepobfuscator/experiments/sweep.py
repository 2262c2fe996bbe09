"""`deepobf sweep FILE.yaml`: a grid of runs, each trained then attacked, as the trials of an Optuna study.

Sweep file (YAML)::

    preset: celeba-cpu              # config preset of every run
    data: /path/to/celeba           # dataset root (relative paths: relative to the sweep file)
    dataset: celeba                 # optional loader name
    out: runs/sweep                 # optional default output folder (CLI --out wins)
    overrides: {train.threads: 2}   # config overrides for every run (mapping or list of KEY=VALUE)
    attack: {recon_epochs: 3}       # options of the attack suite (false: train only)
    defaults: {attributes: Smiling/Male, lambda2: 1}   # merged into every entry of `runs`
    runs:                           # entries; a list value is a grid axis (cartesian product)
      - {method: [encoder, noisy, nopeek]}
      - {method: dp, epsilon: [0.1, 0.5]}
      - {method: deepobfuscator, lambda1: [1, 2, 5, 10], attributes: [Smiling/Male, Smiling/Male,Heavy_Makeup]}
      - {method: deepobfuscator, lambda1: 1, defend: [reconstruction, attributes, both]}

Entry keys: ``method``, ``attributes`` (``"T1,T2/P1,P2"`` or ``{task: [...], private: [...]}``),
``lambda1``, ``lambda2``, ``defend``, ``seed``, ``epsilon`` (shortcut for ``params.epsilon``),
``params`` (method parameters; ``baseline`` is read the same way), ``set`` (per-run config overrides), ``attack``
(this run's attack options over the file's) and ``name``. Runs are written to ``OUT/<name>/`` (names derive from
the settings); identical entries are run once. A finished run whose attack.json was judged with other settings than
the file now asks for is judged again (the old result kept as ``attack.replaced-<UTC time>.json``).

Each grid point is a trial of the study ``sweep-<file stem>`` (a GridSampler over the run names; once a run is added
to or removed from the file, ``sweep-<file stem>-<grid digest>``) in the storage (default ``OUT/study.db``, SQLite);
a trial records its run directory and results in its user attributes. A call
trains and attacks every point no trial has finished, resuming interrupted runs from their last checkpoint; a point
whose trial failed (the error text is recorded) or whose worker died (no heartbeat) is retried by the next call.
Several worker processes, and machines sharing one PostgreSQL storage, split the grid: no point is trained twice
(two workers that pick one point at once: the lower trial number keeps it, the other is pruned). Runs whose first
stages are configured identically share them through ``OUT/.pretrain-cache/``. A folder written by the earlier
sweep (``sweep_status.json``) is migrated into the study on the first call.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from ..attacks.base import AttackSettings
from ..attacks.floors import larger_floor
from ..attacks.suite import run_attack
from ..config import ConfigError, RunConfig, apply_overrides, preset
from ..methods import configure, get_method, train_run
from ..models.bottleneck import AUTO_CHANNELS, AUTO_HEAD
from ..runs import RunDir, RunError
from ..training.precision import AUTO
from .cache import PretrainCache
from .study import default_storage, earlier_owner, fail_dead_trials, grid_state, open_storage, redact, spawn_workers

STATUS_FILE = "sweep_status.json"
CACHE_DIR = ".pretrain-cache"
TOP_KEYS = {"preset", "data", "dataset", "out", "overrides", "attack", "defaults", "runs"}
ENTRY_KEYS = {"method", "attributes", "lambda1", "lambda2", "defend", "seed", "epsilon", "params", "baseline", "set",
              "name", "attack"}
NAMED_PARAMS = {"epsilon": "eps", "sigma": "sigma", "weight": "w", "n_components": "k"}  # in run names
AXES = ("method", "attributes", "lambda1", "lambda2", "defend", "seed", "epsilon")

AttackFn = Callable[[Path, dict[str, Any], bool], Any]
Event = Callable[[str, str, str], None]  # (run name, event, detail)


@dataclass
class RunSpec:
    """One run of a sweep, fully resolved."""

    name: str
    method: str
    task: list[str]
    private: list[str]
    settings: dict[str, Any]  # lambda1, lambda2, defend, seed when given
    params: dict[str, Any] = field(default_factory=dict)  # the method's parameters
    overrides: list[str] = field(default_factory=list)
    attack: dict[str, Any] = field(default_factory=dict)  # this run's attack options over the file's ``attack``


@dataclass
class Sweep:
    """A parsed sweep file."""

    source: Path
    preset: str
    data: str | None
    dataset: str | None
    out: Path | None
    overrides: list[str]
    attack: dict[str, Any] | None  # None: train only
    runs: list[RunSpec]

    def attack_options(self, spec: RunSpec) -> dict[str, Any] | None:
        """The attack options of ``spec``'s judge: the file's, with the run's own over them (None: train only)."""
        return None if self.attack is None else {**self.attack, **spec.attack}

    def config(self, spec: RunSpec) -> RunConfig:
        """The resolved RunConfig of ``spec``."""
        cfg = preset(self.preset)
        if self.data:
            cfg.data.root = self.data
        if self.dataset:
            cfg.data.dataset = self.dataset
        cfg.data.task, cfg.data.private = list(spec.task), list(spec.private)
        cfg.method = spec.method
        cfg.params = dict(spec.params)
        s = spec.settings
        if "lambda1" in s:
            cfg.privacy.lambda1 = float(s["lambda1"])
        if "lambda2" in s:
            cfg.privacy.lambda2 = float(s["lambda2"])
        if "defend" in s:
            cfg.privacy.defend = str(s["defend"])
        if "seed" in s:
            cfg.train.seed = int(s["seed"])
        cfg = apply_overrides(cfg, self.overrides + spec.overrides)
        cfg.name = spec.name
        return configure(cfg)


def _overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where}: expected a mapping KEY: VALUE or a list of 'KEY=VALUE' strings")


def parse_attributes(value: Any, where: str) -> tuple[list[str], list[str]]:
    """``"T1,T2/P1,P2"`` or ``{task: [...], private: [...]}`` -> (task, private)."""
    if isinstance(value, str):
        if value.count("/") != 1:
            raise ConfigError(f"{where}: attribute set {value!r} must look like 'Task1,Task2/Private1,Private2'")
        task, private = (_names(part) for part in value.split("/"))
    elif isinstance(value, dict) and set(value) <= {"task", "private"} and "task" in value:
        task, private = _names(value["task"]), _names(value.get("private", []))
    else:
        raise ConfigError(f"{where}: attribute set {value!r} must be 'T1,T2/P1,P2' or {{task: [...], private: [...]}}")
    if not task:
        raise ConfigError(f"{where}: attribute set {value!r} names no intended attribute")
    return task, private


def _names(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(v).strip() for v in items if str(v).strip()]


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return re.sub(r"[^A-Za-z0-9.+_-]", "", str(value))


def run_name(spec: RunSpec) -> str:
    """A readable directory name from a run's settings."""
    method = get_method(spec.method)
    parts = [spec.method]
    for key, short in NAMED_PARAMS.items():
        if key in spec.params:
            parts.append(f"{short}{_fmt(spec.params[key])}")
    s = spec.settings
    if method.uses_lambda:
        parts.append(f"l1_{_fmt(s.get('lambda1', 'default'))}")
        if "lambda2" in s and float(s["lambda2"]) != 1.0:
            parts.append(f"l2_{_fmt(s['lambda2'])}")
        if s.get("defend", "both") != "both":
            parts.append(f"def_{_fmt(s['defend'])}")
    if "seed" in s:
        parts.append(f"seed{_fmt(s['seed'])}")
    parts.append("+".join(_fmt(t) for t in spec.task) + "-vs-" + ("+".join(_fmt(p) for p in spec.private) or "none"))
    return "-".join(parts)


def _expand(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    axes = []
    for key in AXES:
        if key in entry:
            value = entry[key]
            if key == "attributes" and isinstance(value, dict):
                value = [value]
            axes.append([(key, v) for v in (value if isinstance(value, list) else [value])])
    combos = [dict(c) for c in itertools.product(*axes)] if axes else [{}]
    if any(not c.get("method") for c in combos):
        raise ConfigError(f"{where}: every run needs a 'method'")
    return [{**{k: v for k, v in entry.items() if k not in AXES}, **c} for c in combos]


def _spec(item: dict[str, Any], where: str) -> RunSpec:
    method = str(item["method"])
    get_method(method)
    if "attributes" not in item:
        raise ConfigError(f"{where}: no 'attributes' (set them in the entry or in 'defaults')")
    task, private = parse_attributes(item["attributes"], where)
    baseline = {**dict(item.get("baseline") or {}), **dict(item.get("params") or {})}  # baseline: the former name
    if "epsilon" in item:
        baseline["epsilon"] = item["epsilon"]
    settings = {k: item[k] for k in ("lambda1", "lambda2", "defend", "seed") if k in item}
    if not get_method(method).uses_lambda:  # encoder, noisy, ...: lambdas and defend do not apply
        settings = {k: v for k, v in settings.items() if k == "seed"}
    attack = item.get("attack") or {}
    if not isinstance(attack, dict):
        raise ConfigError(f"{where}: 'attack' must be a mapping of attack options over the file's")
    spec = RunSpec("", method, task, private, settings, baseline, _overrides(item.get("set"), f"{where} set"),
                   dict(attack))
    spec.name = str(item["name"]) if item.get("name") else run_name(spec)
    return spec


def parse_sweep(raw: dict[str, Any], source: Path) -> Sweep:
    """Validate a sweep mapping (as read from ``source``) and expand its runs."""
    where = str(source)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a sweep file must be a YAML mapping")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(TOP_KEYS)})")
    if "preset" not in raw or "runs" not in raw:
        raise ConfigError(f"{where}: a sweep needs 'preset' and 'runs'")
    entries = raw["runs"] if isinstance(raw["runs"], list) else [raw["runs"]]
    defaults = raw.get("defaults") or {}
    specs: list[tuple[str, RunSpec]] = []
    for i, entry in enumerate(entries):
        at = f"{where}: runs[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a mapping, got {entry!r}")
        merged = {**defaults, **entry}
        bad = set(merged) - ENTRY_KEYS
        if bad:
            raise ConfigError(f"{at}: unknown key(s) {sorted(bad)} (known: {sorted(ENTRY_KEYS)})")
        items = _expand(merged, at)
        if "name" in entry and len(items) > 1:
            raise ConfigError(f"{at}: 'name' can only be given to an entry that expands to one run")
        specs += [(at, _spec(item, at)) for item in items]
    data = raw.get("data")
    if data is not None:
        path = Path(str(data)).expanduser()
        data = str(path if path.is_absolute() else (source.parent / path).resolve())
    attack = raw.get("attack", {})
    if attack is not None and attack is not False and not isinstance(attack, dict):
        raise ConfigError(f"{where}: 'attack' must be a mapping of attack options or false")
    if isinstance(attack, dict):
        attack_settings(attack, f"{where}: attack")
    sweep = Sweep(source, str(raw["preset"]), data, raw.get("dataset"), Path(raw["out"]) if raw.get("out") else None,
                  _overrides(raw.get("overrides"), f"{where} overrides"), None if attack is False else dict(attack or {}),
                  [])
    resolved: dict[str, dict[str, Any]] = {}
    for at, spec in specs:  # identical runs (same name, same resolved config and judge) are run once
        if spec.attack and sweep.attack is None:
            raise ConfigError(f"{at}: attack options for a run of a sweep that does not attack ('attack: false')")
        if spec.attack:
            attack_settings(sweep.attack_options(spec), f"{at}: attack")
        cfg = {**_comparable(sweep.config(spec)), "attack": sweep.attack_options(spec)}
        if spec.name in resolved:
            if resolved[spec.name] != cfg:
                raise ConfigError(f"{at}: two different runs are both named '{spec.name}'")
            continue
        resolved[spec.name] = cfg
        sweep.runs.append(spec)
    return sweep


def load_sweep(path: Path) -> Sweep:
    """Read and expand a sweep file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such sweep file") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_sweep(raw, path)


def attack_settings(options: dict[str, Any], where: str) -> Any:
    """The attack suite's settings from a sweep's ``attack`` mapping (unknown keys are named)."""
    known = {f.name for f in dataclasses.fields(AttackSettings)}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"{where}: unknown attack option(s) {sorted(unknown)} (known: {sorted(known)})")
    settings = AttackSettings(**options)
    settings.validate()
    return settings


def default_attack(run_dir: Path, options: dict[str, Any], progress: bool) -> Any:
    """Run the attack suite on a trained run (writes ``attack.json`` and ``recon_grid.png``)."""
    return run_attack(Path(run_dir), attack_settings(options, f"{run_dir}: attack"), progress=progress)


RESOLVED_WHEN_CREATED = (("train", "amp"), ("train", "channels_last"), ("model", "bottleneck_channels"),
                         ("model", "bottleneck_code_head"), ("model", "classifier"), ("method", "warm_epochs"),
                         ("method", "audit_from"))
AUTO_VALUES = (AUTO, AUTO_CHANNELS, AUTO_HEAD)  # what the config asks for when the run resolves a value at creation


def _comparable(cfg: RunConfig, recorded: RunConfig | None = None) -> dict[str, Any]:
    """The config without its name, provenance and data root; a value a run resolves when it is created (``auto``
    precision and layout, the automatic bottleneck width) is compared as ``recorded`` resolved it."""
    raw = cfg.to_dict()
    raw.pop("meta", None)
    raw.pop("name", None)
    raw["data"].pop("root", None)
    if recorded is not None:
        done = recorded.to_dict()
        for section, key in RESOLVED_WHEN_CREATED:
            if raw[section].get(key) in AUTO_VALUES:
                raw[section][key] = done[section].get(key)
    return raw


RUNTIME_ATTACK_KEYS = ("workers", "device", "eval_batch_size")  # how a judge runs, not what it measures


def judged_otherwise(attack_json: Path, options: dict[str, Any] | None) -> list[str]:
    """The attack options a sweep file asks for that ``attack_json`` was judged without ("key (judged X, file asks
    Y)"); empty when it matches, when there is none, or when the sweep does not attack. Only the options the file
    sets are compared (values the judge resolves, ``auto`` or None, are not)."""
    if options is None or not attack_json.is_file():
        return []
    recorded = json.loads(attack_json.read_text()).get("settings") or {}
    wanted = dataclasses.asdict(attack_settings(options, str(attack_json)))
    return [f"{key} (judged {recorded.get(key)!r}, file asks {options[key]!r})" for key in sorted(options)
            if key not in RUNTIME_ATTACK_KEYS and wanted.get(key) not in (None, AUTO)  # None, auto: the judge resolves
            and _judge_value(recorded.get(key)) != _judge_value(wanted.get(key))]


def _judge_value(value: Any) -> Any:
    """A setting as comparable across attack.json and the file (lists as sorted strings, infinity as "inf")."""
    if isinstance(value, (list, tuple)):
        return sorted(str(_judge_value(v)) for v in value)
    if isinstance(value, str) and value.lower() in ("inf", "infinity"):
        return "inf"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "inf" if math.isinf(value) else float(value)
    return value


def keep_replaced_judge(attack_json: Path) -> Path:
    """Move a run's attack.json (and attack.md) aside as ``attack.replaced-<UTC time>.*`` before it is judged again:
    nothing is lost."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = attack_json.with_name(f"attack.replaced-{stamp}.json")
    attack_json.rename(kept)
    report = attack_json.with_suffix(".md")
    if report.is_file():
        report.rename(kept.with_suffix(".md"))
    return kept


def holds_other_config(run: RunDir, cfg: RunConfig) -> bool:
    """Whether ``run`` exists with another configuration than ``cfg`` (so it must not be resumed or read as
    ``cfg``'s)."""
    recorded = run.read_config() if run.exists() else None
    return recorded is not None and _comparable(recorded) != _comparable(cfg, recorded)


def run_is_done(run: RunDir, attack: bool) -> bool:
    """Trained to the end and (when the sweep attacks) attacked."""
    return run.is_complete() and (not attack or (run.path / "attack.json").is_file())


def finished_in_folder(sweep: Sweep, spec: RunSpec, run: RunDir) -> bool:
    """Whether ``spec``'s folder already holds it finished, as the file asks (same config, judged by the same judge
    when the sweep attacks): a study that has not reached it yet (another grid's, or a call with ``--only``) reads it
    back instead of training it."""
    try:
        return (run_is_done(run, sweep.attack is not None) and not holds_other_config(run, sweep.config(spec))
                and not judged_otherwise(run.path / "attack.json", sweep.attack_options(spec)))
    except (ConfigError, RunError, OSError, ValueError):  # an entry that cannot be built, a file that cannot be read
        return False


def run_results(run: RunDir, attack_json: Path | None = None) -> dict[str, Any]:
    """A finished run's headline numbers: intended accuracy and, when attacked (``attack_json``, default
    ``RUN/attack.json``), the best fresh attacker's leakage above the floor per private attribute, and the best
    reconstruction above the constant image."""
    out: dict[str, Any] = {}
    attack_path = attack_json or run.path / "attack.json"
    if attack_path.is_file():
        attack = json.loads(attack_path.read_text())
        out["intended_accuracy"] = {k: v.get("accuracy") for k, v in attack.get("utility", {}).items()}
        out["leakage_above_floor"] = {}
        for attr, entry in attack.get("privacy", {}).items():
            ba, floor = entry.get("balanced_accuracy"), larger_floor(entry)
            out["leakage_above_floor"][attr] = None if ba is None or floor is None else round(ba - floor, 6)
        out["ms_ssim_above_floor"] = (attack.get("reconstruction") or {}).get("ms_ssim_above_floor")
    elif run.summary.is_file():
        out["intended_accuracy"] = run.read_summary().get("test", {}).get("C_acc", {})
    return out


def objective_values(results: dict[str, Any], attacked: bool) -> list[float]:
    """The study's objectives: mean intended accuracy (maximised) and, when attacked, the mean leakage above the
    floor over private attributes (minimised; 0 without private attributes)."""
    accuracy = [v for v in (results.get("intended_accuracy") or {}).values() if v is not None]
    values = [float(np.mean(accuracy)) if accuracy else 0.0]
    if attacked:
        leak = [v for v in (results.get("leakage_above_floor") or {}).values() if v is not None]
        values.append(float(np.mean(leak)) if leak else 0.0)
    return values


def directions(attacked: bool) -> list[str]:
    """Optimisation directions of :func:`objective_values`."""
    return ["maximize", "minimize"] if attacked else ["maximize"]


def study_name(sweep: Sweep) -> str:
    """The study of a sweep file (the same on every machine that runs it against one storage)."""
    return f"sweep-{sweep.source.stem}"


def grid_digest(names: list[str]) -> str:
    """Eight hex digits naming a grid (its run names, in order)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]


def recorded_grid(storage: optuna.storages.BaseStorage, name: str) -> list[str] | None:
    """The grid (run names) the study ``name`` was run with; None when it does not exist or took no point yet."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        dist = trial.distributions.get("run")
        if isinstance(dist, CategoricalDistribution):
            return [str(c) for c in dist.choices]
    return None


def grid_study_name(storage: optuna.storages.BaseStorage, sweep: Sweep, names: list[str]) -> str:
    """The study that holds this grid: ``sweep-<file stem>``, or, once that study holds another grid (a run was
    added to or removed from the file since), ``sweep-<file stem>-<grid digest>``. An Optuna GridSampler's space
    cannot change within a study; finished runs are read back from their directories by the new study, not
    retrained."""
    base = study_name(sweep)
    recorded = recorded_grid(storage, base)
    return base if recorded is None or recorded == names else f"{base}-{grid_digest(names)}"


def check_grid(storage: optuna.storages.BaseStorage, name: str, names: list[str], source: Path) -> None:
    """Refuse a study (named with --study) that was run with another grid than ``names``."""
    recorded = recorded_grid(storage, name)
    if recorded is not None and recorded != names:
        added, removed = sorted(set(names) - set(recorded)), sorted(set(recorded) - set(names))
        raise ConfigError(f"study '{name}' holds another grid than {source} ({len(recorded)} runs; "
                          f"{len(names)} here; added {added or 'none'}, removed {removed or 'none'}): "
                          "name a new study, or leave out --study and the sweep picks its own")


def migrate_status_file(sweep: Sweep, root: Path, study: optuna.Study, emit: Event) -> None:
    """A sweep folder written before sweeps ran on Optuna: its finished runs become completed trials (their run
    directories are checked), failed ones failed trials (retried like any failed trial); the old file is kept as
    ``sweep_status.json.migrated``. An unreadable file is refused with the way out."""
    path = root / STATUS_FILE
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
        runs = dict(old["runs"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: a sweep status file of an older deepobf that cannot be read ({exc}); move it away "
                          "to run the sweep on Optuna (finished run directories are kept and reused)") from None
    names = {spec.name for spec in sweep.runs}
    choices = CategoricalDistribution([spec.name for spec in sweep.runs])  # as the runner suggests it
    migrated = 0
    for name, entry in runs.items():
        if name not in names or not isinstance(entry, dict):
            continue
        run = RunDir(root / name)
        attrs = {"run_dir": str(run.path), "migrated_from": STATUS_FILE}
        if entry.get("status") == "done" and run_is_done(run, sweep.attack is not None):
            results = run_results(run)
            trial = optuna.trial.create_trial(
                params={"run": name}, distributions={"run": choices},
                values=objective_values(results, sweep.attack is not None),
                user_attrs={**attrs, "results": results, "method": entry.get("method")})
        elif entry.get("status") == "failed":
            trial = optuna.trial.create_trial(
                params={"run": name}, distributions={"run": choices},
                state=TrialState.FAIL, user_attrs={**attrs, "error": entry.get("error")})
        else:
            continue
        study.add_trial(trial)
        migrated += 1
    path.replace(path.with_name(STATUS_FILE + ".migrated"))
    emit("sweep", "migrated", f"{migrated} run(s) from {path.name} into study '{study.study_name}'")


@dataclass
class SweepOutcome:
    """What a sweep call leaves: where, and each run's status from the study."""

    out: Path
    storage: str
    study: str
    runs: dict[str, dict[str, Any]]


def sweep_outcome(sweep: Sweep, root: Path, storage: str, study: optuna.Study) -> SweepOutcome:
    """Each run's status (done, failed with its error, running, pending) from the study's trials."""
    state = grid_state(study)
    runs = {}
    for spec in sweep.runs:
        entry: dict[str, Any] = {"method": spec.method, "run": str(root / spec.name)}
        if spec.name in state.done:
            t = state.done[spec.name]
            entry.update(status="done", trial=t.number, results=t.user_attrs.get("results"),
                         seconds=t.duration.total_seconds() if t.duration else None)
        elif spec.name in state.running:
            entry.update(status="running", trial=state.running[spec.name].number)
        elif spec.name in state.failed:
            t = state.failed[spec.name]
            entry.update(status="failed", trial=t.number, error=t.user_attrs.get("error", "worker stopped (no "
                                                                                   "heartbeat)"))
        else:
            entry["status"] = "pending"
            entry["finished_in_folder"] = finished_in_folder(sweep, spec, RunDir(root / spec.name))
        runs[spec.name] = entry
    return SweepOutcome(root, redact(storage), study.study_name, runs)


class SweepRunner:
    """One worker of a sweep: pulls grid points from the study until none is left for it."""

    def __init__(self, sweep: Sweep, root: Path, storage: str, name: str | None = None,
                 attack_fn: AttackFn | None = None, progress: bool = True, only: list[str] | None = None,
                 on_event: Event | None = None, attack_workers: int | None = None) -> None:
        self.sweep, self.root, self.storage = sweep, Path(root), storage
        self.attack_fn = attack_fn or default_attack
        self.progress, self.emit = progress, on_event or (lambda name, event, detail: None)
        self.attack_workers = attack_workers
        self.specs = {s.name: s for s in sweep.runs}
        self.all_names = list(self.specs)  # the grid (the same for every call, whatever --only selects)
        self.names = [n for n in self.all_names if not only or n in only]
        if only and len(self.names) != len(set(only)):
            raise ConfigError(f"{sweep.source}: no run(s) named {sorted(set(only) - set(self.names))}")
        self.only = bool(only)
        self.broken: str | None = None  # why a trial failed before it could take a grid point
        backend = open_storage(storage)
        if name:  # a study named with --study must hold this grid; one the sweep picks does by construction
            check_grid(backend, name, self.all_names, sweep.source)
        else:
            name = grid_study_name(backend, sweep, self.all_names)
        self.study = optuna.create_study(
            study_name=name, storage=backend, load_if_exists=True,
            directions=directions(sweep.attack is not None),
            sampler=optuna.samplers.GridSampler({"run": self.all_names}))

    def objective(self, trial: optuna.Trial) -> list[float]:
        """Train and attack one grid point (or read a finished run); a duplicate of a point another worker holds is
        pruned."""
        try:
            name = trial.suggest_categorical("run", self.all_names)
        except Exception as exc:  # the study's recorded grid changed under it (another machine's file)
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        spec = self.specs[name]
        run = RunDir(self.root / name)
        trial.set_user_attr("run_dir", str(run.path.resolve()))
        trial.set_user_attr("method", spec.method)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        owner = earlier_owner(self.study, trial, name, redo="rejudge_of" in trial.user_attrs)
        if owner is not None:
            trial.set_user_attr("duplicate_of", owner.number)
            raise optuna.TrialPruned(f"{name} is trial {owner.number}'s")
        self.emit(name, "start", str(run.path))
        try:
            cfg = self.sweep.config(spec)
            if holds_other_config(run, cfg):
                raise RunError(f"{run.path} holds a run with a different configuration than {self.sweep.source} "
                               f"asks for '{spec.name}'; move it away or rename the run")
            if not run.is_complete():
                train_run(cfg, run.path, resume=run.exists(), progress=self.progress,
                          cache=PretrainCache(self.root / CACHE_DIR))
            stale = judged_otherwise(run.path / "attack.json", self.sweep.attack_options(spec))
            if stale:  # the file asks for another judge than the one that wrote attack.json: judge again
                kept = keep_replaced_judge(run.path / "attack.json")
                self.emit(name, "rejudge",
                          f"judged with other settings ({'; '.join(stale)}); the old one is {kept.name}")
            if self.sweep.attack is not None and not (run.path / "attack.json").is_file():
                self.emit(name, "attack", str(run.path))
                options = dict(self.sweep.attack_options(spec) or {})
                if self.attack_workers is not None:
                    options.setdefault("workers", self.attack_workers)
                self.attack_fn(run.path, options, self.progress)
                if not (run.path / "attack.json").is_file():
                    raise RunError(f"{run.path}: the attack step wrote no attack.json")
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            self.emit(name, "failed", f"{type(exc).__name__}: {exc}")
            raise
        results = run_results(run)
        trial.set_user_attr("results", results)
        self.emit(name, "done", str(run.path))
        return objective_values(results, self.sweep.attack is not None)

    def run(self) -> None:
        """Retry the points that failed in earlier calls, then take open points until none is left."""
        fail_dead_trials(self.study)
        state = grid_state(self.study)
        for name, trial in state.failed.items():
            if name in self.names and name not in state.running and name not in state.waiting:
                self.study.enqueue_trial({"run": name}, user_attrs={"retry_of": trial.number})
                self.emit(name, "retry", f"trial {trial.number} failed: {trial.user_attrs.get('error', 'worker died')}")
        if self.only:  # the grid sampler would pick any point: the selected ones are queued instead
            for name in state.open_points(self.names):
                self.study.enqueue_trial({"run": name})
        for name in self.names:
            if name not in state.done:
                continue
            stale = judged_otherwise(self.root / name / "attack.json", self.sweep.attack_options(self.specs[name]))
            if not stale:
                self.emit(name, "skipped", "finished earlier")
            elif name not in state.waiting and name not in state.running:
                self.study.enqueue_trial({"run": name}, user_attrs={"rejudge_of": state.done[name].number})
                self.emit(name, "rejudge",
                          f"queued: judged with other settings than the file asks ({'; '.join(stale)})")
        while self.work_left():  # the GridSampler stops a study once every point was visited, retries may remain
            before = self.finished_trials()
            self.study.optimize(self.objective, catch=(Exception,), gc_after_trial=True, callbacks=[self.stop_when_done])
            if self.broken is not None:
                raise RunError(f"study '{self.study.study_name}': a trial failed before it took a grid point "
                               f"({self.broken}); the sweep stopped instead of failing every further trial")
            if self.finished_trials() == before:
                return

    def finished_trials(self) -> int:
        """How many trials of the study have finished (a measure of progress)."""
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL,
                                                                   TrialState.PRUNED)))

    def work_left(self) -> bool:
        """Whether a selected grid point is open (no trial took it yet) or waits in the queue."""
        state = grid_state(self.study)
        return bool(state.open_points(self.names) or state.waiting & set(self.names))

    def stop_when_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: stop once nothing is left for this worker (points failing now wait for the next call), or
        once a trial failed without taking a point (every later trial would fail the same way)."""
        if trial.state == TrialState.FAIL and "run" not in trial.params:
            self.broken = str(trial.user_attrs.get("error", "no error recorded"))
            study.stop()
        elif not self.work_left():
            study.stop()


def _worker(sweep_path: str, root: str, storage: str, name: str | None, only: list[str] | None, threads: int,
            attack: bool) -> None:
    """A spawned sweep worker: its share of the threads, the same sweep file and study."""
    import torch

    torch.set_num_threads(threads)

    def log(run: str, event: str, detail: str) -> None:
        print(f"[sweep {os.getpid()}] {run}: {event} {detail}", flush=True)

    SweepRunner(load_sweep(Path(sweep_path)), Path(root), storage, name, progress=False, only=only, on_event=log,
                attack_workers=1).run()


def run_sweep(sweep: Sweep, out: Path | None = None, attack_fn: AttackFn | None = None, progress: bool = True,
              only: list[str] | None = None, on_event: Event | None = None, storage: str | None = None,
              workers: int = 1, study: str | None = None) -> SweepOutcome:
    """Train and attack every grid point of ``sweep`` not finished yet, as trials of an Optuna study in ``storage``
    (default: ``OUT/study.db``), with ``workers`` processes on this machine; other machines running the same sweep
    against the same storage share the grid. Returns each run's status."""
    root = Path(out or sweep.out or Path("runs") / sweep.source.stem)
    root.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(root)
    emit = on_event or (lambda name, event, detail: None)
    runner = SweepRunner(sweep, root, storage, study, attack_fn, progress, only, emit)
    migrate_status_file(sweep, root, runner.study, emit)
    if workers <= 1:
        runner.run()
    else:
        if attack_fn is not None:
            raise ConfigError("a custom attack function runs in this process only (workers = 1)")
        import torch

        threads = max(1, torch.get_num_threads() // workers)
        codes = spawn_workers(_worker, (str(sweep.source), str(root), storage, runner.study.study_name, only, threads,
                                        sweep.attack is not None), workers)
        if any(codes):
            emit("sweep", "failed", f"worker exit codes {codes}")
    return sweep_outcome(sweep, root, storage, runner.study)
