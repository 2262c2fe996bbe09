"""Running the attack suite's jobs: one job per (attacker, repeat count, seed), cached on disk, run in this process
or in worker processes.

A job fits one attacker on its view of the features and scores it, then writes its record
(``RUN/attack/<tag>/<stem>.json``), its kept reconstructions (``.query.npy`` / ``.val.npy``) and, for single
queries, its fitted weights (``fitted/<stem>.*``). A stored record whose settings match is reused, so a killed
attack restarts at the first unfinished job. Jobs that read earlier reconstructions (the inversion) wait for the
reconstruction jobs of the same repeat count. A learned attacker's job at a repeat count above 1 starts from the
weights its own job at the next smaller count reached (``Job.warm_from``, with ``AttackSettings.warm_start``) and
waits for it: averaged features are the same means under less noise, so the fit converges in fewer epochs under the
same early stopping and caps.

Worker processes are *spawned* (a forked child of a process that has run torch's OpenMP pool can hang): each
rebuilds the attack from the run directory and reads the features the parent extracted from their on-disk cache,
so nothing is extracted twice. The CPU threads are split between the workers. A failure in a worker stops the
attack with the job's name and the worker's traceback; no result row is ever silently missing.
"""
from __future__ import annotations

import io
import json
import multiprocessing
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..models.factorised import is_limit
from ..progress import progress_bar
from ..runs import RunError
from ..utils import atomic_write_bytes, atomic_write_json
from .base import AttackData, Attacker, attacker_seed, repeat_label
from .fit import past_cap_stop
from .reconstruction import EXTENSION_KEYS
from .registry import ATTACKERS
from .saved import load_attacker, save_attacker


@dataclass(frozen=True)
class Job:
    """One attacker, at one repeat count, with one seed."""

    name: str
    m: float
    seed: int
    kind: str
    warm_from: str = ""  # stem of the job whose fitted weights this one starts from ("" = from scratch)

    @property
    def tag(self) -> str:
        """``""`` for single queries, ``@m8`` / ``@minf`` for repeated ones."""
        return "" if self.m == 1 else f"@m{repeat_label(self.m)}"

    @property
    def stem(self) -> str:
        """File stem of the job's results under the attack's work folder."""
        return f"{self.name}{self.tag}.s{self.seed}"


COST_RANK = {"vgg": 0, "resnet": 2, "inversion": 3}  # long jobs first, so the last one to finish is short


def job_order(job: Job) -> tuple[int, float, str]:
    """Submission priority: learned decoders and the VGG attacker first, floors and probes last."""
    rank = COST_RANK.get(job.name, 1 if job.kind == "reconstruction" else 4)
    return rank, -(1e9 if is_limit(job.m) else job.m), job.stem


def uses_reconstructions(name: str) -> bool:
    """Whether the attacker starts from the reconstructions of the other reconstruction attackers."""
    return bool(getattr(ATTACKERS.get(name)(), "uses_reconstructions", False))


def warm_startable(name: str) -> bool:
    """Whether the attacker can start its fit from another fitted copy of itself (``start_from``)."""
    return hasattr(ATTACKERS.get(name)(), "start_from")


def chain_warm_starts(jobs: list[Job]) -> list[Job]:
    """``jobs`` with each warm-startable attacker's job at a repeat count above 1 set to start from the same
    attacker's job (same seed) at the next smaller repeat count."""
    counts = sorted({j.m for j in jobs})
    present = {(j.name, j.m, j.seed): j for j in jobs}
    cache: dict[str, bool] = {}
    out = []
    for job in jobs:
        below = [m for m in counts if m < job.m and (job.name, m, job.seed) in present]
        if below and cache.setdefault(job.name, warm_startable(job.name)):
            job = replace(job, warm_from=present[(job.name, below[-1], job.seed)].stem)
        out.append(job)
    return out


def dependencies(jobs: list[Job]) -> dict[Job, set[Job]]:
    """Each job's prerequisites: an attacker that uses reconstructions waits for every other reconstruction job of
    its repeat count; a warm-started job waits for the job it starts from."""
    recon = [j for j in jobs if j.kind == "reconstruction"]
    by_stem = {j.stem: j for j in jobs}
    out = {}
    for job in jobs:
        needs = set()
        if job.kind == "reconstruction" and uses_reconstructions(job.name):
            needs = {j for j in recon if j.m == job.m and j.name != job.name}
        if job.warm_from:
            if job.warm_from not in by_stem:
                raise RunError(f"attack job {job.stem} starts from {job.warm_from}, which is not among the jobs")
            needs.add(by_stem[job.warm_from])
        out[job] = needs
    return out


# ---------------------------------------------------------------------------------------------- one job
def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wanted_settings(attacker: Attacker, job: Job, ctx: Any, query_digest: str, attributes: list[str],
                    sampling: str) -> dict[str, Any]:
    """The settings a stored record must have been made with to be reused."""
    return {**attacker.settings(ctx), "seed": job.seed, "query_digest": query_digest, "attributes": attributes,
            "sampling": sampling, **({"warm_from": job.warm_from} if job.warm_from else {})}


def legacy_stop(record: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Why a record written before the cap extension existed stopped, when that is where ``wanted`` (with an
    extension) would stop too: the other settings equal and the fit stopped early (``patience``) or crept less than
    ``min_delta`` in its last window at the cap (``plateau``, the extension rule applied to its stored curve).
    None: the record is not what ``wanted`` would give."""
    stored = record.get("settings") or {}
    if any(k in stored for k in EXTENSION_KEYS) or not all(k in wanted for k in EXTENSION_KEYS):
        return None
    if stored != {k: v for k, v in wanted.items() if k not in EXTENSION_KEYS}:
        return None
    training = record.get("training") or {}
    if training.get("stopped_early"):
        return "patience"
    curve = training.get("curve") or []
    why = curve and past_cap_stop(curve, training.get("max_epochs", len(curve)), training.get("patience", 1),
                                  wanted["extend"], wanted["min_delta"])
    return "plateau" if why == "plateau" else None


def stored_record(work: Path, job: Job, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The job's stored record when it was made with ``wanted`` (and its reconstructions are there). A record from
    before the cap extension that the extension would not have changed is reused and rewritten with ``wanted``."""
    record = load_json(work / f"{job.stem}.json")
    if not record:
        return None
    if record.get("settings") != wanted:
        stop = legacy_stop(record, wanted)
        if stop is None:
            return None
        record["training"].update({"extend": wanted["extend"], "min_delta": wanted["min_delta"], "extended": 0,
                                   "stop": stop})
        record["settings"] = wanted
        atomic_write_json(work / f"{job.stem}.json", record)
    if job.kind == "reconstruction" and not (work / f"{job.stem}.query.npy").is_file():
        return None
    return record


def kept_reconstructions(work: Path, stems: dict[str, list[str]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Kept query / validation reconstructions of the best seed of each reconstruction attacker (``stems``: attacker
    -> its job stems), read from disk."""
    query, val = {}, {}
    for name, names in stems.items():
        records = [(load_json(work / f"{s}.json"), s) for s in names]
        scored = [(r.get("ms_ssim") if r.get("ms_ssim") is not None else -np.inf, s) for r, s in records if r]
        if not scored:
            continue
        best = max(scored)[1]
        if (work / f"{best}.query.npy").is_file():
            query[name] = np.load(work / f"{best}.query.npy")
        if (work / f"{best}.val.npy").is_file():
            val[name] = np.load(work / f"{best}.val.npy")
    return query, val


def run_job(job: Job, view: AttackData, ctx: Any, work: Path, query_digest: str, sampling: str,
            recon_stems: dict[str, list[str]], retrain: bool = False) -> dict[str, Any]:
    """Fit and score one attacker (or reuse its stored record); write its record, images and fitted weights."""
    attacker = ATTACKERS.get(job.name)()
    attributes = [s.name for s in view.private_specs]
    wanted = wanted_settings(attacker, job, ctx, query_digest, attributes, sampling)
    stored = None if retrain else stored_record(work, job, wanted)
    if stored is not None:
        return stored
    if getattr(attacker, "uses_reconstructions", False):
        view.recon_query, view.recon_val = kept_reconstructions(
            work, {name: stems for name, stems in recon_stems.items() if name != job.name})
    if job.warm_from:
        attacker.start_from(load_attacker(work, job.warm_from)[0])
    started = time.perf_counter()
    torch.manual_seed(attacker_seed(job.seed, job.name, job.tag, "draws"))
    training = attacker.fit(view, ctx, job.seed)
    evaluation = attacker.evaluate(view, ctx, job.seed)
    record = {"name": attacker.name, "kind": attacker.kind, "floor": attacker.floor,
              "description": attacker.description, "settings": wanted, "seed": job.seed, "m": repeat_label(job.m),
              **evaluation.record, "training": training, "seconds": round(time.perf_counter() - started, 3)}
    if job.kind == "reconstruction":
        _save_npy(work / f"{job.stem}.query.npy", evaluation.query_images)
        if evaluation.val_images is not None:
            _save_npy(work / f"{job.stem}.val.npy", evaluation.val_images)
    state = attacker.state()  # every repeat count's: a job at a larger count may start from it
    if state is not None:  # with the precision it ran in, so whoever loads it runs it the same way
        module, spec = state
        save_attacker(work, job.stem, module, {**spec, **({"amp": wanted["amp"]} if "amp" in wanted else {})})
    atomic_write_json(work / f"{job.stem}.json", record)
    return record


# ---------------------------------------------------------------------------------------------- many jobs
RunOne = Callable[[Job], dict[str, Any]]

_WORKER: dict[str, Any] = {}


def _init_worker(build: Callable[..., RunOne], args: tuple, threads: int) -> None:
    """A worker process: its share of the threads and the attack rebuilt from disk (``build(*args)``)."""
    torch.set_num_threads(threads)
    _WORKER["run"] = build(*args)


def _worker_job(job: Job) -> dict[str, Any]:
    try:
        return _WORKER["run"](job)
    except BaseException as exc:  # the traceback text travels back; the parent names the job
        raise RuntimeError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from None


def run_jobs(jobs: list[Job], run_one: RunOne, workers: int = 1, threads: int = 1,
             build: Callable[..., RunOne] | None = None, build_args: tuple = (), progress: bool = True,
             on_done: Callable[[Job, dict[str, Any]], None] | None = None) -> dict[Job, dict[str, Any]]:
    """Run every job (prerequisites first) in this process (``workers`` <= 1) or in ``workers`` spawned processes
    that each call ``build(*build_args)`` once to get their ``run_one``; returns each job's record."""
    needs = dependencies(jobs)
    done: dict[Job, dict[str, Any]] = {}
    bar = progress_bar(total=len(jobs), desc="attack suite", unit="job", disable=not progress)

    def finish(job: Job, record: dict[str, Any]) -> None:
        done[job] = record
        bar.update(1)
        bar.set_postfix(last=f"{job.stem} {record.get('seconds', 0):.0f}s")
        if on_done is not None:
            on_done(job, record)

    try:
        if workers <= 1 or build is None or len(jobs) <= 1:
            while len(done) < len(jobs):
                ready = sorted((j for j in jobs if j not in done and needs[j] <= set(done)), key=job_order)
                if not ready:
                    raise RunError("attack jobs wait on each other (a dependency cycle)")
                finish(ready[0], run_one(ready[0]))
            return done
        context = multiprocessing.get_context("spawn")
        running: dict[Future, Job] = {}
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(build, build_args, threads)) as pool:
            submitted: set[Job] = set()
            while len(done) < len(jobs):
                ready = sorted((j for j in jobs if j not in submitted and needs[j] <= set(done)), key=job_order)
                for job in ready:
                    running[pool.submit(_worker_job, job)] = job
                    submitted.add(job)
                if not running:
                    raise RunError("attack jobs wait on each other (a dependency cycle)")
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    error = future.exception()
                    if error is not None:
                        for other in running:
                            other.cancel()
                        raise RunError(f"attacker job {job.stem} failed in a worker process: {error}") from None
                    finish(job, future.result())
        return done
    finally:
        bar.close()
