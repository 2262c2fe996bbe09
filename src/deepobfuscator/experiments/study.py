"""Optuna studies as the engine of grids and searches: storages, worker processes, and reading a study's runs.

A study lives in a storage that many workers share: an embedded SQLite file by default, PostgreSQL or MySQL
(SQLAlchemy URLs) when several machines work on one grid, or Optuna's journal file (``journal:PATH``) on a shared
filesystem. On the SQL storages every running trial keeps a heartbeat, so the trial of a worker that died is failed
(and retried by the next call) once its heartbeat is older than the grace period.

Every trial records in its user attributes the run directory it trained (``run_dir``) and, when finished, the
run's headline results (``results``), so `deepobf report --study` and `optuna-dashboard` show the same runs.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from ..config import ConfigError

SCHEMA_RACE_TRIES = 10  # opens of a fresh storage that another process is creating at the same time
HEARTBEAT_S = float(os.environ.get("DEEPOBF_STUDY_HEARTBEAT", "30"))  # seconds between a running trial's heartbeats
GRACE_S = float(os.environ.get("DEEPOBF_STUDY_GRACE", "120"))  # a running trial silent this long has died
optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported once, by the sweep's own events
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: experimental API


def default_storage(folder: Path) -> str:
    """The embedded SQLite storage of a sweep or search folder."""
    return f"sqlite:///{(Path(folder) / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: ``sqlite:///FILE``, ``postgresql://...``, ``mysql://...`` (with heartbeats), or
    ``journal:PATH`` (a journal file on a shared filesystem)."""
    if url.startswith("journal:"):
        path = url[len("journal:"):].removeprefix("//")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(SCHEMA_RACE_TRIES):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=max(1, int(HEARTBEAT_S)),
                                              grace_period=int(GRACE_S), engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy / driver errors all mean: this URL does not open
            if _schema_race(exc):
                # another process created the schema at the same moment (workers or machines starting on a fresh
                # storage): the tables exist now, so opening again succeeds
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ConfigError(f"study storage {redact(url)}: cannot open it ({type(exc).__name__}: {exc})") from None
    raise ConfigError(f"study storage {redact(url)}: its schema could not be created ({SCHEMA_RACE_TRIES} tries "
                      "racing other processes)")


def _schema_race(exc: Exception) -> bool:
    """Whether opening failed only because another process was creating the same storage's tables."""
    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and (
        isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in text or "database is locked" in text)


def redact(url: str) -> str:
    """A storage URL without its password (for messages and records)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def load_study(url: str, name: str | None = None) -> optuna.Study:
    """An existing study (the only one in the storage when ``name`` is None)."""
    storage = open_storage(url)
    if name is None:
        names = [s.study_name for s in storage.get_all_studies()]
        if len(names) != 1:
            raise ConfigError(f"study storage {redact(url)} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                              "name one with --study NAME")
        name = names[0]
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(s.study_name for s in storage.get_all_studies()) or "none"
        raise ConfigError(f"study storage {redact(url)} has no study '{name}' (known: {known})") from None


def trial_runs(study: optuna.Study) -> list[Path]:
    """The run directories of a study's finished trials (newest trial per directory), in trial order."""
    seen: dict[str, FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run = trial.user_attrs.get("run_dir")
        if run:
            seen[run] = trial
    return [Path(run) for run, _ in sorted(seen.items(), key=lambda kv: kv[1].number)]


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail the running trials whose worker stopped sending heartbeats (SQL storages)."""
    optuna.storages.fail_stale_trials(study)


@dataclass
class GridState:
    """Where each grid point of a study stands, from its trials (param ``run``)."""

    done: dict[str, FrozenTrial] = field(default_factory=dict)
    running: dict[str, FrozenTrial] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    failed: dict[str, FrozenTrial] = field(default_factory=dict)  # the newest failure of a point not done

    def open_points(self, names: list[str]) -> list[str]:
        """Points no trial has taken yet (a point that failed waits for the next call's retry)."""
        return [n for n in names if n not in self.done and n not in self.running and n not in self.waiting
                and n not in self.failed]


def grid_state(study: optuna.Study) -> GridState:
    """Read every trial of a grid study."""
    state = GridState()
    for trial in study.get_trials(deepcopy=False):
        name = trial.params.get("run") or (trial.system_attrs.get("fixed_params") or {}).get("run")
        if name is None:
            continue
        if trial.state == TrialState.COMPLETE:
            state.done[name] = trial
        elif trial.state == TrialState.RUNNING:
            state.running.setdefault(name, trial)
        elif trial.state == TrialState.WAITING:
            state.waiting.add(name)
        elif trial.state == TrialState.FAIL and (name not in state.failed or trial.number > state.failed[name].number):
            state.failed[name] = trial
    for name in list(state.failed):
        if name in state.done:
            del state.failed[name]
    return state


def earlier_owner(study: optuna.Study, trial: optuna.Trial, name: str, redo: bool = False) -> FrozenTrial | None:
    """A finished trial of grid point ``name``, or a running one numbered below ``trial``: then ``trial`` is a
    duplicate (two workers picked the point at once; the lower number keeps it). With ``redo`` (a trial queued to
    redo a finished point) only running trials count."""
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if other.number == trial.number or other.params.get("run") != name:
            continue
        if (other.state == TrialState.COMPLETE and not redo) or (other.state == TrialState.RUNNING
                                                                  and other.number < trial.number):
            return other
    return None


def spawn_workers(target: Callable[..., Any], args: tuple, workers: int) -> list[int]:
    """Run ``target(*args)`` in ``workers`` spawned processes at once; their exit codes. Stopping this process
    (Ctrl-C, or a SIGTERM to it alone) stops the workers too: they once went on training, orphaned, after their
    sweep was killed."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args, name=f"deepobf-worker-{i}") for i in range(workers)]
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        if in_main:
            signal.signal(signal.SIGTERM, stop)
        for p in processes:
            p.start()
        for p in processes:
            p.join()
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            if p.pid is not None:
                p.join(timeout=30)
    return [int(p.exitcode or 0) for p in processes]
