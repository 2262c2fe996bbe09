"""The attack suite: every registered attacker (fit on the attackers' training features, evaluated on the
evaluation split), for every seed and, for a stochastic pipeline, every repeat count (m = 1, 8 and the averaging
limit); then assemble and write ``attack.json`` (schema 3, see docs/attacks.md), ``attack.md`` and
``recon_grid.png``.

Features are extracted once per split (kept under ``RUN/attack/<tag>/features/``) and shared by every attacker
and every repeat count; a stochastic pipeline that declares a deterministic prefix plus a noise tail, and passes
its check, is served from cached prefixes with fresh tail draws (:mod:`.features`). Per-attacker results live under
``RUN/attack/<tag>/`` (:mod:`.schedule`); a stored result whose settings match is reused, so an interrupted attack
resumes at the first unfinished job. Independent jobs run in worker processes (``workers``).
"""
from __future__ import annotations

import hashlib
import json
import pickle
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data import LOADERS, AttributeSpec, PreparedData
from ..losses import resolve_msssim, split_logits
from ..methods import METHODS
from ..models.factorised import is_limit
from ..runs import RunDir, run_specs
from ..training.precision import resolve_amp
from ..utils import atomic_write_json, atomic_write_text, resolve_device
from .attribute import score_logits
from .base import AttackContext, AttackData, AttackSettings, repeat_label
from .features import (
    FeatureSet, Pipeline, check_disjoint, extract_features, images_to_dataset_tensor, limit_view, load_pipeline,
    select_rows,
)
from .floors import label_floors, larger_floor
from .registry import ATTACKERS, get_attackers
from .reid import CHANCE, make_trials, run_trials
from .report import render_markdown, save_grid
from .saved import publish_attacker, read_fitted
from .schedule import Job, chain_warm_starts, kept_reconstructions, load_json, run_job, run_jobs
from .sources import AttackSources, Source, open_source, usable_specs

SCHEMA_VERSION = 3
# what a spawned worker process rebuilds from its own imports; anything registered or replaced later (a caller's own
# attacker, defence or dataset loader) travels to the workers (see build_worker)
WORKER_REGISTRIES = {"attacker": ATTACKERS, "method": METHODS, "loader": LOADERS}
BUILT_IN = {kind: registry.snapshot() for kind, registry in WORKER_REGISTRIES.items()}
FittedHook = Callable[[Path, str, nn.Module, dict[str, Any]], None]
FITTED_HOOKS: list[FittedHook] = []
"""Called as ``hook(work_dir, attacker_name, fitted_module, build_spec)`` for the reported seed of every fitted
single-query attacker."""


def cap_notes(records: dict[str, dict[str, Any]], settings: AttackSettings) -> list[str]:
    """What the reconstruction attackers' caps did: which ran out of epochs still improving, which crept at their
    cap and stopped there, which trained past it."""
    def stop(rec: dict[str, Any]) -> str | None:  # None: not trained by epochs (floors, the inversion)
        training = rec.get("training") or {}
        early = training.get("stopped_early")
        return training.get("stop") or (None if early is None else "patience" if early else "cap")
    recs = {name: rec for name, rec in records.items() if rec["kind"] == "reconstruction" and rec.get("training")}
    names = {why: sorted({n.split("@")[0] for n, r in recs.items() if stop(r) == why})
             for why in ("cap", "limit", "plateau")}
    extended = sorted({f"{n} ({r['training']['extended']})" for n, r in recs.items()
                       if (r["training"].get("extended") or 0) > 0})
    notes = []
    limit = settings.recon_epochs + settings.recon_extend
    if names["cap"] or names["limit"]:
        notes.append(f"reconstruction attacker(s) {', '.join(sorted(names['cap'] + names['limit']))} ran out of epochs "
                     f"(cap {settings.recon_epochs}, limit {limit}) still improving: a larger --recon-epochs or "
                     "--recon-extend may reconstruct better")
    if names["plateau"]:
        notes.append(f"reconstruction attacker(s) {', '.join(names['plateau'])} reached the cap ({settings.recon_epochs} "
                     f"epochs) improving by less than {settings.extend_min_delta:.1%} of the loss per "
                     f"{settings.patience} epochs, and stopped there")
    if extended:
        notes.append(f"trained past the cap (extra epochs): {', '.join(extended)}")
    return notes


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _best(per_attacker: dict[str, dict[str, Any]], key: str) -> str | None:
    scored = [(r.get(key), name) for name, r in per_attacker.items() if r.get(key) is not None]
    return max(scored, key=lambda t: t[0])[1] if scored else None


def output_paths(run: RunDir, out: str | Path | None) -> tuple[Path, Path, Path]:
    """attack.json, attack.md and recon_grid.png (beside ``out`` when given, named after its stem)."""
    if out is None:
        return run.path / "attack.json", run.path / "attack.md", run.path / "recon_grid.png"
    out = Path(out)
    return out, out.with_suffix(".md"), out.with_name(f"{out.stem}_recon_grid.png")


def publish_fitted(work: Path, name: str, stem: str) -> None:
    """Make the reported seed's fitted weights (``fitted/<stem>.*``) the attacker's (``fitted/<name>.*``), read by
    `deepobf inspect`, and hand them to every hook in :data:`FITTED_HOOKS`. Attackers with nothing saved are
    skipped."""
    if not publish_attacker(work, stem, name):
        return
    if FITTED_HOOKS:
        module, spec = read_fitted(work, name)
        spec = {k: v for k, v in spec.items() if k != "name"}
        for hook in FITTED_HOOKS:
            hook(work, name, module, spec)


# ---------------------------------------------------------------------------------------------- setup
@dataclass
class AttackSetup:
    """Everything the attacker jobs need, built once per attack (and once per worker process, from disk)."""

    ctx: AttackContext
    data: AttackData
    evaluation: Source
    attacker_src: Source
    notes: list[str]
    work: Path
    query_indices: np.ndarray
    eval_excluded: int
    sampling: dict[str, Any]
    eval_rows: np.ndarray
    views: dict[float, AttackData] = field(default_factory=dict)

    @property
    def query_digest(self) -> str:
        """Digest of the query rows (part of every stored record's settings)."""
        return _digest(self.query_indices.tolist())


def _val_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded fit/validation rows of the attackers' training set (at least 2 of each when possible)."""
    order = np.random.default_rng([seed, 11]).permutation(n)
    n_val = min(max(2, int(round(fraction * n))), max(n - 2, 1))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _shared_classes(specs: list[AttributeSpec], train: PreparedData, train_rows: np.ndarray, test: PreparedData,
                    test_rows: np.ndarray, notes: list[str]) -> list[AttributeSpec]:
    """The private attributes whose evaluation classes the attackers can learn: an attribute none of whose evaluation
    classes occur in the attackers' training rows (e.g. the driver under a split by driver) is skipped with a note."""
    def classes(data: PreparedData, rows: np.ndarray, name: str) -> set[int]:
        for group, matrix in ((data.private_specs, data.private), (data.task_specs, data.task)):
            names = [s.name for s in group]
            if name in names:
                return set(np.unique(matrix[rows, names.index(name)]).tolist())
        return set()

    out = []
    for spec in specs:
        seen, wanted = classes(train, train_rows, spec.name), classes(test, test_rows, spec.name)
        if not seen & wanted:
            notes.append(f"{spec.name}: no evaluation class occurs in the attackers' training images (a split by "
                         "identity?); not attacked")
            continue
        out.append(spec)
    return out


PROBE_IMAGES = 16  # evaluation images the factorisation check sends through the black-box pipeline


def prepare(run: RunDir, pipeline: Pipeline, settings: AttackSettings, sources: AttackSources, progress: bool,
            sampling: dict[str, Any] | None = None) -> AttackSetup:
    """Open the sources, pick evaluation and attacker rows (disjoint), decide how features are drawn (``sampling``
    given: a worker taking the parent's decision) and extract them once into the work folder's cache."""
    cfg = pipeline.cfg
    task_specs, private_specs = run_specs(cfg)
    msssim = resolve_msssim(cfg.msssim, cfg.data.image_size)
    ctx = AttackContext(pipeline, settings, msssim, progress)
    evaluation = open_source(run, cfg, sources.dataset, sources.data_root, sources.max_images, progress)
    if sources.attacker_root is not None:
        attacker_src = open_source(run, cfg, sources.attacker_dataset or cfg.data.dataset, sources.attacker_root,
                                   sources.max_images, progress)
    elif sources.attacker_dataset is not None:
        raise ValueError("--attacker-dataset needs --attacker-data ROOT")
    elif settings.split == "all" and sources.data_root is not None:
        attacker_src = open_source(run, cfg, None, None, None, progress)  # the run's own train split
    else:
        attacker_src = evaluation
    notes = evaluation.notes + [n for n in attacker_src.notes if attacker_src is not evaluation]
    utility_specs = usable_specs(task_specs, [evaluation], notes)
    privacy_specs = usable_specs(private_specs, [evaluation, attacker_src], notes)
    eval_name = f"{evaluation.dataset}:{evaluation.root}:{settings.split}"
    train_name = f"{attacker_src.dataset}:{attacker_src.root}:train"

    # rows: the attackers' training rows never meet the evaluation rows
    if settings.split == "all":
        train_rows, train_excluded = select_rows(attacker_src.data, "train", train_name, settings.max_train_images,
                                                 seed=settings.seed)
        train_files = [attacker_src.data.index.files[i] for i in train_rows]
        eval_rows, eval_excluded = select_rows(evaluation.data, "all", eval_name, exclude=train_files)
    else:
        eval_rows, eval_excluded = select_rows(evaluation.data, settings.split, eval_name)
        exclude = [evaluation.data.index.files[i] for i in eval_rows] if attacker_src is not evaluation else None
        train_rows, train_excluded = select_rows(attacker_src.data, "train", train_name, settings.max_train_images,
                                                 exclude=exclude, seed=settings.seed)
    worker = sampling is not None
    privacy_specs = _shared_classes(privacy_specs, attacker_src.data, train_rows, evaluation.data, eval_rows, notes)
    if sampling is None:
        pipeline.detect_stochastic(images_to_dataset_tensor(evaluation.data, eval_rows[:2]))
        probe = images_to_dataset_tensor(evaluation.data, eval_rows[:PROBE_IMAGES])
        sampling = pipeline.declare(probe, fast=settings.fast, seed=settings.seed)
    else:
        pipeline.stochastic = sampling["path"] != "deterministic"
        pipeline.factorisation = pipeline.modules.factorisation() if sampling["path"] == "fast" else None

    fit_rows, val_rows = _val_split(len(train_rows), settings.val_fraction, settings.seed)
    n_query = min(len(eval_rows), max(settings.reid_images, settings.grid_images, settings.inversion_images))
    query_rows = np.random.default_rng([settings.seed, 7]).permutation(len(eval_rows))[:n_query]
    probe_rows = np.random.default_rng([settings.seed, 13]).permutation(len(val_rows))[:settings.inversion_images]
    source_key = {"weights": _file_digest(run.final), "eval": [evaluation.dataset, evaluation.root, settings.split,
                  len(eval_rows), _digest(eval_rows.tolist())], "attacker": [attacker_src.dataset, attacker_src.root],
                  "train": _digest(train_rows[fit_rows].tolist()), "val": _digest(train_rows[val_rows].tolist()),
                  "max_images": sources.max_images, "sampling": sampling["path"], "budget": settings.budget}
    work = run.path / "attack" / f"{evaluation.dataset}-{settings.split}-{_digest(source_key)}"
    work.mkdir(parents=True, exist_ok=True)

    test = extract_features(pipeline, evaluation.data, eval_rows, settings.split, eval_name,
                            settings.eval_batch_size, eval_excluded, progress, cache=work / "features" / "eval.npy",
                            trust_cache=worker)
    attackers_all = extract_features(pipeline, attacker_src.data, train_rows, "train", train_name,
                                     settings.eval_batch_size, train_excluded, progress,
                                     cache=work / "features" / "train.npy", trust_cache=worker)
    check_disjoint(attackers_all, test)
    train, val = attackers_all.subset(fit_rows), attackers_all.subset(val_rows)
    train.excluded = train_excluded
    data = AttackData(train, val, test, query_rows, probe_rows, privacy_specs, utility_specs,
                      classifier=pipeline.modules.classifier)
    return AttackSetup(ctx, data, evaluation, attacker_src, notes, work, test.indices[query_rows], eval_excluded,
                       sampling, eval_rows)


@torch.no_grad()
def score_utility(setup: AttackSetup, task_specs: list[AttributeSpec]) -> dict[str, Any]:
    """The deployed C on what the phone sends for every evaluation image (one seeded draw when random)."""
    pipeline, settings = setup.ctx.pipeline, setup.ctx.settings
    data, rows = setup.evaluation.data, setup.eval_rows
    pipeline.modules.classifier.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(settings.seed)
    try:
        logits = torch.cat([pipeline.modules.classifier(pipeline.send(images_to_dataset_tensor(
            data, rows[i:i + settings.eval_batch_size]).to(pipeline.device)).float()).float().cpu()
            for i in range(0, len(rows), settings.eval_batch_size)])
    finally:
        torch.random.set_rng_state(state)
    blocks = dict(zip([s.name for s in task_specs], split_logits(logits, task_specs)))
    test = setup.data.test
    return {spec.name: score_logits(blocks[spec.name], test.labels(spec.name), spec, settings.bootstrap,
                                    settings.seed) for spec in setup.data.task_specs}


def _limit_set(features: FeatureSet, name: str, setup: AttackSetup, progress: bool) -> FeatureSet:
    """The averaging limit of a black-box stochastic set: the mean of ``limit_draws`` draws of every image,
    estimated once and kept in the work folder (the fast path has it exactly: ``with_repeat(LIMIT)``)."""
    draws = setup.ctx.settings.limit_draws
    path = setup.work / "features" / f"{name}@minf.npy"
    key = {"draws": draws, "rows": len(features), "rows_digest": _digest(features.indices.tolist())}
    if load_json(path.with_suffix(".json")) == key:
        return replace(features, features=np.load(path, mmap_mode="r"), send=None, repeat=float("inf"), post=None)
    out = limit_view(features, draws, setup.ctx.settings.eval_batch_size, seed=setup.ctx.settings.seed,
                     progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_name(f".{path.name}.partial.npy"), np.asarray(out.features))
    path.with_name(f".{path.name}.partial.npy").replace(path)
    atomic_write_json(path.with_suffix(".json"), key)
    return out


def build_views(setup: AttackSetup, progress: bool) -> dict[float, AttackData]:
    """The attack data at every repeat count of this attack (single queries, m-averages, the averaging limit)."""
    data = setup.data
    views: dict[float, AttackData] = {}
    for m in setup.ctx.settings.repeats(setup.ctx.pipeline.stochastic):
        if m == 1:
            views[m] = data
            continue
        if is_limit(m) and data.test.tail is None:  # black-box: estimated once, on fit and validation rows together
            test = _limit_set(data.test, "eval", setup, progress)
            both = FeatureSet(data.train.source, "train", data.train.data,
                              np.concatenate([data.train.indices, data.val.indices]), None, send=data.train.send,
                              device=data.train.device)
            train_all = _limit_set(both, "train", setup, progress)
            n_fit = len(data.train)
            train, val = train_all.subset(np.arange(n_fit)), train_all.subset(np.arange(n_fit, len(train_all)))
        else:
            train, val, test = data.train.with_repeat(m), data.val.with_repeat(m), data.test.with_repeat(m)
        views[m] = AttackData(train, val, test, data.query_rows, data.val_probe_rows, data.private_specs,
                              data.task_specs, data.classifier)
    setup.views = views
    return views


def job_runner(setup: AttackSetup, recon_stems: dict[float, dict[str, list[str]]], retrain: bool
               ) -> Callable[[Job], dict[str, Any]]:
    """The function that runs one job of ``setup`` in this process."""
    def run(job: Job) -> dict[str, Any]:
        return run_job(job, setup.views[job.m], setup.ctx, setup.work, setup.query_digest, setup.sampling["path"],
                       recon_stems.get(job.m, {}), retrain)
    return run


def caller_registrations(needed: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    """The entries of :data:`WORKER_REGISTRIES` that the attack uses (``needed``: kind -> names) and that were
    registered, or replaced, since the package was imported."""
    return {kind: {name: entry for name, entry in WORKER_REGISTRIES[kind].changes_since(BUILT_IN[kind]).items()
                   if name in needed.get(kind, set())} for kind in WORKER_REGISTRIES}


def build_worker(run_path: str, settings: AttackSettings, sources: AttackSources, sampling: dict[str, Any],
                 recon_stems: dict[float, dict[str, list[str]]], retrain: bool,
                 registrations: dict[str, dict[str, Any]]) -> Callable[[Job], dict[str, Any]]:
    """In a worker process: the attack rebuilt from the run directory and the parent's feature cache (with the
    caller's own attackers, defences and loaders registered as in the parent)."""
    for kind, entries in registrations.items():
        WORKER_REGISTRIES[kind].restore(entries)
    run = RunDir(Path(run_path))
    pipeline = load_pipeline(run, resolve_device(settings.device))
    setup = prepare(run, pipeline, settings, sources, progress=False, sampling=sampling)
    setup.ctx.progress = False
    build_views(setup, progress=False)
    return job_runner(setup, recon_stems, retrain)


def _spread(values: list[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if not len(arr):
        return {"values": values}
    return {"values": [round(float(v), 6) for v in arr], "mean": round(float(arr.mean()), 6),
            "std": round(float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, 6),
            "min": round(float(arr.min()), 6), "max": round(float(arr.max()), 6)}


def combine_seeds(records: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """One attacker's records over seeds -> the best for the attacker (per attribute for attribute attackers) with
    the spread of the headline metric; also the position of the best seed (for kept reconstructions)."""
    first = records[0]
    if first["kind"] == "attribute":
        results = {}
        for attr in first["results"]:
            scores = [r["results"][attr]["balanced_accuracy"] for r in records]
            best = int(np.nanargmax([-np.inf if v is None else v for v in scores]))
            results[attr] = {**records[best]["results"][attr], "seed": records[best]["seed"],
                             "training": records[best]["training"].get(attr),
                             "epochs_per_seed": [r["training"].get(attr, {}).get("epochs") for r in records],
                             "seeds": {"seeds": [r["seed"] for r in records], **_spread(scores)}}
        return {**{k: v for k, v in first.items() if k not in ("results", "training", "seed")},
                "results": results}, 0
    scores = [r.get("ms_ssim") for r in records]
    best = int(np.nanargmax([-np.inf if v is None else v for v in scores]))
    return {**records[best], "seeds": {"seeds": [r["seed"] for r in records], **_spread(scores)}}, best


def plan_jobs(attackers: list[Any], setup: AttackSetup) -> tuple[list[Job], list[str]]:
    """Every (attacker, repeat count, seed) job of the attack, and notes on attackers that do not apply."""
    settings = setup.ctx.settings
    jobs, notes = [], []
    for attacker in attackers:
        if attacker.kind == "attribute" and not setup.data.private_specs:
            continue
        reason = attacker.unavailable(setup.data) if hasattr(attacker, "unavailable") else None
        if reason:
            notes.append(f"{attacker.name} skipped: {reason}")
            continue
        for m in setup.views:
            for seed in settings.attacker_seeds():
                jobs.append(Job(attacker.name, m, seed, attacker.kind))
    return (chain_warm_starts(jobs) if settings.warm_start else jobs), notes


def recon_stems(jobs: list[Job]) -> dict[float, dict[str, list[str]]]:
    """Per repeat count: each reconstruction attacker's job stems (for the attackers that start from them)."""
    out: dict[float, dict[str, list[str]]] = {}
    for job in jobs:
        if job.kind == "reconstruction":
            out.setdefault(job.m, {}).setdefault(job.name, []).append(job.stem)
    return out


def gather(attackers: list[Any], jobs: dict[Job, dict[str, Any]], setup: AttackSetup, m: float
           ) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The combined record of every attacker at repeat count ``m`` (seeds combined; for single queries the reported
    seed's weights published) and the kept query reconstructions of the reported seeds."""
    out: dict[str, dict[str, Any]] = {}
    stems: dict[str, list[str]] = {}
    for attacker in attackers:
        mine = sorted((j for j in jobs if j.name == attacker.name and j.m == m), key=lambda j: j.seed)
        if not mine:
            continue
        combined, best = combine_seeds([jobs[j] for j in mine])
        out[attacker.name] = combined
        if m == 1:
            publish_fitted(setup.work, attacker.name, mine[best].stem)
        if attacker.kind == "reconstruction":
            stems[attacker.name] = [j.stem for j in mine]
    query, _ = kept_reconstructions(setup.work, stems)
    return out, query


# ---------------------------------------------------------------------------------------------- assemble
CLASSIFICATION_KEYS = ("accuracy", "accuracy_ci95", "balanced_accuracy", "balanced_accuracy_ci95", "auc", "auc_ci95",
                       "majority_rate", "n")
IMAGE_KEYS = ("n", "ms_ssim", "ms_ssim_ci95", "psnr", "psnr_ci95")


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 6)


def summarise_privacy(records: dict[str, dict[str, Any]], specs: list[AttributeSpec],
                      floors: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per private attribute: the best (non-floor) attacker, its balanced accuracy within intended classes, the
    label and oracle floors and the leakage above them; every attacker's result under ``per_attacker``."""
    privacy: dict[str, Any] = {}
    for spec in specs:
        per = {name: {**rec["results"][spec.name], "floor": rec.get("floor", False)}
               for name, rec in records.items() if rec["kind"] == "attribute" and spec.name in rec["results"]}
        attackers = {n: r for n, r in per.items() if not r["floor"]}
        best = _best(attackers, "balanced_accuracy")
        top = attackers.get(best, {})
        oracle = per.get("oracle")
        label = floors.get(spec.name)
        ba = top.get("balanced_accuracy")
        floor = larger_floor({"label_floor": label, "oracle_floor": oracle})
        privacy[spec.name] = {
            "best_attacker": best, **{k: top.get(k) for k in CLASSIFICATION_KEYS}, "within": top.get("within", {}),
            "label_floor": label,
            "oracle_floor": {k: oracle.get(k) for k in CLASSIFICATION_KEYS} if oracle else None,
            "leakage_above_label": _minus(ba, label["balanced_accuracy"] if label else None),
            "leakage_above_oracle": _minus(ba, oracle.get("balanced_accuracy") if oracle else None),
            "floor": floor, "leakage_above_floor": _minus(ba, floor),
            "per_attacker": per,
        }
    return privacy


SUBSET_KEYS = ("start", "steps", "start_ms_ssim", "compared_with", "compared_ms_ssim", "gain", "gain_ci95")


def summarise_reconstruction(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The best (non-floor) reconstruction attacker by MS-SSIM and by PSNR among those scored on the whole evaluation
    set, the best floor, every attacker. An attacker scored on fewer images (the inversion, on its query subset) is
    never ranked against them: ``subset_attackers`` gives its score beside the decoder it is compared with on the
    same images and the gain."""
    per = {name: {**{k: rec.get(k) for k in IMAGE_KEYS}, "description": rec.get("description"),
                  "floor": rec.get("floor", False), "training": rec.get("training"), "seeds": rec.get("seeds"),
                  **{k: rec[k] for k in SUBSET_KEYS if k in rec}}
           for name, rec in records.items() if rec["kind"] == "reconstruction"}
    full_n = max((r["n"] or 0 for r in per.values()), default=0)
    attackers = {n: r for n, r in per.items() if not r["floor"] and r["n"] == full_n}
    subset = {n: {k: r.get(k) for k in ("n", "ms_ssim", "ms_ssim_ci95", *SUBSET_KEYS) if k in r}
              for n, r in per.items() if not r["floor"] and r["n"] != full_n}
    floors = {n: r for n, r in per.items() if r["floor"]}
    best, best_psnr, floor = _best(attackers, "ms_ssim"), _best(attackers, "psnr"), _best(floors, "ms_ssim")
    top = attackers.get(best, {})
    return {"best_attacker": best, **{k: top.get(k) for k in ("ms_ssim", "ms_ssim_ci95", "psnr", "psnr_ci95")},
            "best_psnr_attacker": best_psnr, "best_psnr": attackers[best_psnr]["psnr"] if best_psnr else None,
            "floor": {"attacker": floor, **{k: floors[floor].get(k) for k in IMAGE_KEYS}} if floor else None,
            "ms_ssim_above_floor": _minus(top.get("ms_ssim"), floors[floor]["ms_ssim"] if floor else None),
            "eval_images": full_n, "subset_attackers": subset, "per_attacker": per}


def _short(privacy: dict[str, Any], reconstruction: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a repeated-query attack, and every attacker's score (without training records)."""
    return {"privacy": {attr: {**{k: e[k] for k in ("best_attacker", "balanced_accuracy", "balanced_accuracy_ci95",
                                                    "majority_rate", "leakage_above_oracle", "leakage_above_label",
                                                    "oracle_floor", "label_floor", "floor", "leakage_above_floor")},
                               "per_attacker": {n: {k: r.get(k) for k in ("balanced_accuracy", "balanced_accuracy_ci95",
                                                                          "floor")}
                                                for n, r in e["per_attacker"].items()}}
                        for attr, e in privacy.items()},
            "reconstruction": {**{k: reconstruction[k] for k in ("best_attacker", "ms_ssim", "ms_ssim_ci95", "psnr",
                                                                 "ms_ssim_above_floor")},
                               "per_attacker": {n: {k: r.get(k) for k in ("ms_ssim", "ms_ssim_ci95", "n", "floor")}
                                                for n, r in reconstruction["per_attacker"].items()}}}


def _portable(registrations: dict[str, Any]) -> bool:
    """Whether every registration pickles (by reference), so a spawned worker can rebuild it."""
    try:
        pickle.dumps(registrations)
        return True
    except (pickle.PicklingError, AttributeError, TypeError):
        return False


def _timing(jobs: dict[Job, dict[str, Any]], prepare_s: float, total_s: float, workers: int, threads: int
            ) -> dict[str, Any]:
    """Where the attack's time went: preparation, every job (fit + evaluation) and the wall clock."""
    per = {job.stem: rec.get("seconds") for job, rec in sorted(jobs.items(), key=lambda kv: kv[0].stem)}
    return {"total_s": round(total_s, 2), "prepare_s": round(prepare_s, 2), "workers": workers,
            "threads_per_worker": threads, "jobs_s": round(sum(v or 0.0 for v in per.values()), 2), "jobs": per}


def run_attack(run_path: str | Path, settings: AttackSettings | None = None, sources: AttackSources | None = None,
               out: str | Path | None = None, retrain: bool = False, progress: bool = True) -> dict[str, Any]:
    """Attack a trained run; write attack.json/.md and the grid; return the attack.json content."""
    settings = settings or AttackSettings()
    sources = sources or AttackSources()
    settings.validate()
    attackers = get_attackers(settings.attackers)
    started = time.perf_counter()
    run = RunDir(Path(run_path))
    pipeline = load_pipeline(run, resolve_device(settings.device))
    settings.amp = resolve_amp(settings.amp, pipeline.device)  # attack.json and every stored record say what ran
    setup = prepare(run, pipeline, settings, sources, progress)
    data, notes = setup.data, setup.notes
    utility = score_utility(setup, data.task_specs)
    floors = label_floors(data.test, data.private_specs, data.task_specs)
    build_views(setup, progress)
    jobs, skipped = plan_jobs(attackers, setup)
    notes += skipped
    prepare_s = time.perf_counter() - started

    workers = min(settings.worker_count(), max(1, len(jobs)))
    registrations = caller_registrations({
        "attacker": {job.name for job in jobs}, "method": {pipeline.cfg.method},
        "loader": {pipeline.cfg.data.dataset, *(d for d in (sources.dataset, sources.attacker_dataset) if d)}})
    if workers > 1 and not _portable(registrations):
        own = sorted(name for entries in registrations.values() for name in entries)
        notes.append(f"attackers ran in this process: {', '.join(own)} cannot be sent to a worker process (define "
                     "their factories and functions at module level to run attackers in parallel)")
        workers = 1
    threads = max(1, torch.get_num_threads() // workers)
    stems = recon_stems(jobs)
    setup.ctx.progress = progress and workers <= 1
    done = run_jobs(jobs, job_runner(setup, stems, retrain), workers, threads, build=build_worker,
                    build_args=(str(run.path), settings, sources, setup.sampling, stems, retrain, registrations),
                    progress=progress)

    by_repeat: dict[float, dict[str, dict[str, Any]]] = {}
    kept: dict[str, np.ndarray] = {}
    for m in setup.views:
        by_repeat[m], query = gather(attackers, done, setup, m)
        if m == 1:
            kept = query
    records = by_repeat[1]
    privacy = summarise_privacy(records, data.private_specs, floors)
    reconstruction = summarise_reconstruction(records)
    if not any(r["kind"] == "attribute" for r in records.values()) and data.private_specs:
        notes.append("no attribute attacker was run (--attackers)")
    if pipeline.stochastic:
        how = ("drawn on cached noise-free prefixes with the declared noise (fast path, checked against the pipeline)"
               if setup.sampling["path"] == "fast" else "sent through the whole pipeline again (black-box path)")
        notes.append(f"the deployed pipeline is stochastic: attackers saw a fresh draw of the features every epoch and "
                     f"at evaluation, {how}; repeated-query results (features averaged over m draws; m = inf: the "
                     "averaging limit) are under 'repeated'")
        if setup.sampling.get("reason") and setup.sampling.get("declared"):
            notes.append(f"black-box path: {setup.sampling['reason']}")
    if data.train.excluded:
        notes.append(f"left out {data.train.excluded} attacker-training image(s) that are evaluation images")
    if setup.eval_excluded:
        notes.append(f"left out {setup.eval_excluded} evaluation image(s) that the attackers trained on")
    notes += cap_notes(records, settings)

    floor_names = {name for name, rec in records.items() if rec.get("floor")}
    reid = _reid(setup.evaluation.data, setup.query_indices[:settings.reid_images], kept, settings, setup.ctx.msssim,
                 notes, floor_names)
    json_path, md_path, grid_path = output_paths(run, out)
    result = {
        "schema": SCHEMA_VERSION,
        "run": str(run.path),
        "method": pipeline.cfg.method,
        "run_seed": pipeline.cfg.train.seed,
        "dataset": setup.evaluation.dataset,
        "data_root": setup.evaluation.root,
        "split": settings.split,
        "eval_images": len(data.test),
        "eval_excluded": setup.eval_excluded,
        "attacker_train": {"dataset": setup.attacker_src.dataset, "root": setup.attacker_src.root, "split": "train",
                           "images": len(data.train) + len(data.val), "fit_images": len(data.train),
                           "val_images": len(data.val), "excluded_eval_images": data.train.excluded},
        "feature_shape": list(data.test.feature_shape),
        "stochastic": pipeline.stochastic,
        "sampling": setup.sampling,
        "repeats": [repeat_label(m) for m in setup.views],
        "budget": settings.budget_record(),
        "settings": settings.as_dict(),
        "msssim": setup.ctx.msssim.as_dict(),
        "utility": utility,
        "privacy": privacy,
        "reconstruction": reconstruction,
        "repeated": {repeat_label(m): _short(summarise_privacy(recs, data.private_specs, floors),
                                             summarise_reconstruction(recs))
                     for m, recs in by_repeat.items() if m != 1},
        "reid": reid,
        "notes": notes,
        "work_dir": str(setup.work),
        "files": {"markdown": md_path.name, "grid": grid_path.name if kept else None},
        "timing": _timing(done, prepare_s, time.perf_counter() - started, workers, threads),
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, render_markdown(result))
    if kept and settings.grid_images:
        raw = np.stack([setup.evaluation.data.images[i] for i in setup.query_indices[:settings.grid_images]])
        save_grid(grid_path, raw, [(name, imgs[:settings.grid_images]) for name, imgs in kept.items()])
    return result


def _reid(data: PreparedData, query_indices: np.ndarray, recon_images: dict[str, np.ndarray],
          settings: AttackSettings, msssim: Any, notes: list[str], floors: set[str]) -> dict[str, Any]:
    """Re-identification rates of every reconstructor; top level = the best (non-floor) attacker per variant, and
    the best floor's rate beside it."""
    identities = data.index.identities
    gallery = len(data.index)
    trials = {v: make_trials(query_indices, gallery, identities, v, settings.seed) for v in ("same_image", "same_person")}
    if identities is None:
        notes.append("re-identification same_person: the evaluation dataset has no identity labels")
    elif len(trials["same_person"]) == 0 and len(query_indices):
        notes.append("re-identification same_person: no query image has another image of the same person")
    per: dict[str, dict[str, Any]] = {}
    for name, recons in recon_images.items():
        per[name] = {v: run_trials(recons[:len(query_indices)], t, data, settings.reid_similarity, msssim, settings.seed)
                     for v, t in trials.items()}
    out: dict[str, Any] = {"chance": CHANCE, "candidates": 4, "similarity": settings.reid_similarity,
                           "queries": int(len(query_indices))}
    for variant in ("same_image", "same_person"):
        most = max((r[variant]["n"] for r in per.values()), default=0)  # rank on the same queries only
        rates = {name: r[variant] for name, r in per.items() if name not in floors and r[variant]["n"] == most}
        floor = _best({name: r[variant] for name, r in per.items() if name in floors}, "rate")
        out[f"{variant}_floor"] = per[floor][variant]["rate"] if floor else None
        best = _best(rates, "rate")
        out[variant] = rates[best]["rate"] if best else None
        out[f"{variant}_ci95"] = rates[best]["ci95"] if best else None
        out[f"{variant}_n"] = rates[best]["n"] if best else 0
        out[f"{variant}_attacker"] = best
    out["per_attacker"] = per
    return out
