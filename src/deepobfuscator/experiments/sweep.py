"""`deepobf sweep FILE.yaml`: a grid of runs, each trained then attacked; resumable and failure-tolerant.

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
``lambda1``, ``lambda2``, ``defend``, ``seed``, ``epsilon`` (shortcut for ``baseline.epsilon``),
``baseline`` (method parameters), ``set`` (per-run config overrides) and ``name``. Runs are written to
``OUT/<name>/`` (names derive from the settings); identical entries are run once. ``OUT/sweep_status.json``
records done/failed per run with the error text; rerunning skips finished runs (trained and attacked),
resumes interrupted ones from their last checkpoint and retries failed ones. Runs whose first stages
are configured identically share them through ``OUT/.pretrain-cache/``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..attacks.base import AttackSettings
from ..attacks.suite import run_attack
from ..config import ConfigError, RunConfig, apply_overrides, preset
from ..methods import configure, get_method, train_run
from ..runs import RunDir, RunError
from ..utils import atomic_write_json
from .cache import PretrainCache

STATUS_FILE = "sweep_status.json"
CACHE_DIR = ".pretrain-cache"
TOP_KEYS = {"preset", "data", "dataset", "out", "overrides", "attack", "defaults", "runs"}
ENTRY_KEYS = {"method", "attributes", "lambda1", "lambda2", "defend", "seed", "epsilon", "baseline", "set", "name"}
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
    baseline: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


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

    def config(self, spec: RunSpec) -> RunConfig:
        """The resolved RunConfig of ``spec``."""
        cfg = preset(self.preset)
        if self.data:
            cfg.data.root = self.data
        if self.dataset:
            cfg.data.dataset = self.dataset
        cfg.data.task, cfg.data.private = list(spec.task), list(spec.private)
        cfg.method = spec.method
        cfg.baseline = dict(spec.baseline)
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
        if key in spec.baseline:
            parts.append(f"{short}{_fmt(spec.baseline[key])}")
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
    baseline = dict(item.get("baseline") or {})
    if "epsilon" in item:
        baseline["epsilon"] = item["epsilon"]
    settings = {k: item[k] for k in ("lambda1", "lambda2", "defend", "seed") if k in item}
    if not get_method(method).uses_lambda:  # encoder, noisy, ...: lambdas and defend do not apply
        settings = {k: v for k, v in settings.items() if k == "seed"}
    spec = RunSpec("", method, task, private, settings, baseline, _overrides(item.get("set"), f"{where} set"))
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
    for at, spec in specs:  # identical runs (same name, same resolved config) are run once
        cfg = _comparable(sweep.config(spec))
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


def _comparable(cfg: RunConfig) -> dict[str, Any]:
    raw = cfg.to_dict()
    raw.pop("meta", None)
    raw.pop("name", None)
    raw["data"].pop("root", None)
    return raw


def run_is_done(run: RunDir, attack: bool) -> bool:
    """Trained to the end and (when the sweep attacks) attacked."""
    return run.is_complete() and (not attack or (run.path / "attack.json").is_file())


def run_sweep(sweep: Sweep, out: Path | None = None, attack_fn: AttackFn | None = None, progress: bool = True,
              only: list[str] | None = None, on_event: Event | None = None) -> dict[str, Any]:
    """Train and attack every run not finished yet; record each outcome in ``OUT/sweep_status.json``."""
    root = Path(out or sweep.out or Path("runs") / sweep.source.stem)
    root.mkdir(parents=True, exist_ok=True)
    status_path = root / STATUS_FILE
    status = json.loads(status_path.read_text()) if status_path.is_file() else {}
    status.update({"sweep": str(sweep.source), "out": str(root)})
    runs_status: dict[str, Any] = status.setdefault("runs", {})
    attack_fn = attack_fn or default_attack
    emit = on_event or (lambda name, event, detail: None)
    selected = [s for s in sweep.runs if not only or s.name in only]
    if only and len(selected) != len(set(only)):
        missing = sorted(set(only) - {s.name for s in selected})
        raise ConfigError(f"{sweep.source}: no run(s) named {missing}")

    def save() -> None:
        atomic_write_json(status_path, status)

    for spec in selected:
        run = RunDir(root / spec.name)
        if run_is_done(run, sweep.attack is not None):
            entry = runs_status.setdefault(spec.name, {})
            entry.update({"status": "done", "method": spec.method, "run": str(run.path)})
            entry.pop("error", None)
            emit(spec.name, "skipped", "finished earlier")
            continue
        started = time.time()
        runs_status[spec.name] = {"status": "running", "method": spec.method, "run": str(run.path)}
        save()
        emit(spec.name, "start", str(run.path))
        try:
            cfg = sweep.config(spec)
            if run.exists() and _comparable(run.read_config()) != _comparable(cfg):
                raise RunError(f"{run.path} holds a run with a different configuration than {sweep.source} "
                               f"asks for '{spec.name}'; move it away or rename the run")
            if not run.is_complete():
                train_run(cfg, run.path, resume=run.exists(), progress=progress,
                          cache=PretrainCache(root / CACHE_DIR))
            if sweep.attack is not None:
                emit(spec.name, "attack", str(run.path))
                attack_fn(run.path, dict(sweep.attack), progress)
                if not (run.path / "attack.json").is_file():
                    raise RunError(f"{run.path}: the attack step wrote no attack.json")
        except Exception as exc:  # one failing run must not stop the sweep
            runs_status[spec.name] = {"status": "failed", "method": spec.method, "run": str(run.path),
                                      "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                                      "seconds": round(time.time() - started, 1)}
            save()
            emit(spec.name, "failed", f"{type(exc).__name__}: {exc}")
            continue
        runs_status[spec.name] = {"status": "done", "method": spec.method, "run": str(run.path),
                                  "seconds": round(time.time() - started, 1)}
        save()
        emit(spec.name, "done", f"{time.time() - started:.0f}s")
    save()
    return status
