"""The attack suite: a short loop over registered attackers (fit on the attackers' training features, evaluate on
the evaluation split), with cache-or-run per attacker, seed and repeat count; then assemble and write
``attack.json`` (schema 2, see docs/attacks.md), ``attack.md`` and ``recon_grid.png``.

Per-attacker results live under ``RUN/attack/<tag>/`` (``<name>[@mM].s<seed>.json`` and, for reconstructors,
``.query.npy`` / ``.val.npy``); a stored result whose settings match is reused, so an interrupted attack
resumes at the first unfinished attacker.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data import AttributeSpec, PreparedData
from ..losses import resolve_msssim, split_logits
from ..runs import RunDir, run_specs
from ..utils import atomic_write_bytes, atomic_write_json, atomic_write_text, resolve_device
from .attribute import score_logits
from .base import AttackContext, AttackData, Attacker, AttackSettings
from .features import (
    Pipeline, check_disjoint, extract_features, images_to_dataset_tensor, load_pipeline, select_rows,
)
from .floors import label_floors
from .registry import ATTACKERS, get_attackers
from .reid import CHANCE, make_trials, run_trials
from .report import render_markdown, save_grid
from .saved import save_attacker
from .sources import AttackSources, Source, open_source, usable_specs

SCHEMA_VERSION = 2
FittedHook = Callable[[Path, str, nn.Module, dict[str, Any]], None]
FITTED_HOOKS: list[FittedHook] = []
"""Called as ``hook(work_dir, attacker_name, fitted_module, build_spec)`` right after an attacker is fitted."""


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _best(per_attacker: dict[str, dict[str, Any]], key: str) -> str | None:
    scored = [(r.get(key), name) for name, r in per_attacker.items() if r.get(key) is not None]
    return max(scored, key=lambda t: t[0])[1] if scored else None


def output_paths(run: RunDir, out: str | Path | None) -> tuple[Path, Path, Path]:
    """attack.json, attack.md and recon_grid.png (beside ``out`` when given, named after its stem)."""
    if out is None:
        return run.path / "attack.json", run.path / "attack.md", run.path / "recon_grid.png"
    out = Path(out)
    return out, out.with_suffix(".md"), out.with_name(f"{out.stem}_recon_grid.png")


def after_fit(work: Path, attacker: Attacker) -> None:
    """The one place a fitted attacker is handed on: its weights are saved for `deepobf inspect`
    (:func:`save_attacker`), then every hook in :data:`FITTED_HOOKS` gets ``(work_dir, name, module,
    build_spec)``. Attackers with nothing learned are skipped."""
    state = attacker.state()
    if state is None:
        return
    save_attacker(work, attacker.name, *state)
    for hook in FITTED_HOOKS:
        hook(work, attacker.name, *state)


# ---------------------------------------------------------------------------------------------- setup
@dataclass
class AttackSetup:
    """Everything the attacker loop needs, built once per attack."""

    ctx: AttackContext
    data: AttackData
    evaluation: Source
    attacker_src: Source
    utility: dict[str, Any]
    notes: list[str]
    work: Path
    query_indices: np.ndarray
    eval_excluded: int


def _val_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded fit/validation rows of the attackers' training set (at least 2 of each when possible)."""
    order = np.random.default_rng([seed, 11]).permutation(n)
    n_val = min(max(2, int(round(fraction * n))), max(n - 2, 1))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def prepare(run: RunDir, pipeline: Pipeline, settings: AttackSettings, sources: AttackSources, progress: bool
            ) -> AttackSetup:
    """Open the sources, pick evaluation and attacker rows (disjoint), extract features, score the deployed C."""
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
    pipeline.detect_stochastic(images_to_dataset_tensor(evaluation.data, eval_rows[:2]))

    c_logits: list[torch.Tensor] = []
    pipeline.modules.classifier.eval()
    test = extract_features(pipeline, evaluation.data, eval_rows, settings.split, eval_name,
                            settings.eval_batch_size, eval_excluded, progress,
                            on_batch=lambda feats, rows: c_logits.append(pipeline.modules.classifier(feats).float().cpu()))
    logits = torch.cat(c_logits)
    blocks = dict(zip([s.name for s in task_specs], split_logits(logits, task_specs)))
    utility = {spec.name: score_logits(blocks[spec.name], test.labels(spec.name), spec, settings.bootstrap,
                                       settings.seed) for spec in utility_specs}
    attackers_all = extract_features(pipeline, attacker_src.data, train_rows, "train", train_name,
                                     settings.eval_batch_size, train_excluded, progress)
    check_disjoint(attackers_all, test)
    fit_rows, val_rows = _val_split(len(attackers_all), settings.val_fraction, settings.seed)
    train, val = attackers_all.subset(fit_rows), attackers_all.subset(val_rows)
    train.excluded = train_excluded

    n_query = min(len(test), max(settings.reid_images, settings.grid_images, settings.inversion_images))
    query_rows = np.random.default_rng([settings.seed, 7]).permutation(len(test))[:n_query]
    probe_rows = np.random.default_rng([settings.seed, 13]).permutation(len(val))[:settings.inversion_images]
    source_key = {"weights": _file_digest(run.final), "eval": [evaluation.dataset, evaluation.root, settings.split,
                  len(test), _digest(test.indices.tolist())], "attacker": [attacker_src.dataset, attacker_src.root],
                  "train": _digest(train.indices.tolist()), "val": _digest(val.indices.tolist()),
                  "max_images": sources.max_images}
    work = run.path / "attack" / f"{evaluation.dataset}-{settings.split}-{_digest(source_key)}"
    work.mkdir(parents=True, exist_ok=True)
    data = AttackData(train, val, test, query_rows, probe_rows, privacy_specs, utility_specs,
                      classifier=pipeline.modules.classifier)
    return AttackSetup(ctx, data, evaluation, attacker_src, utility, notes, work, test.indices[query_rows],
                       eval_excluded)


# ---------------------------------------------------------------------------------------------- the loop
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


def run_attackers(attackers: list[Attacker], setup: AttackSetup, data: AttackData, tag: str, retrain: bool
                  ) -> dict[str, dict[str, Any]]:
    """Cache-or-run every attacker for every seed on ``data``; return the combined record per attacker (kept
    reconstructions of the best seed land in ``data.recon_query`` / ``data.recon_val`` for later attackers)."""
    ctx, work = setup.ctx, setup.work
    query_digest = _digest(setup.query_indices.tolist())
    attributes = [s.name for s in data.private_specs]
    out: dict[str, dict[str, Any]] = {}
    for prototype in attackers:
        if prototype.kind == "attribute" and not attributes:
            continue
        records, kept, fitted = [], [], []
        for seed in ctx.settings.attacker_seeds():
            attacker = ATTACKERS.get(prototype.name)() if records else prototype
            stem = f"{attacker.name}{tag}.s{seed}"
            json_path, q_npy, v_npy = work / f"{stem}.json", work / f"{stem}.query.npy", work / f"{stem}.val.npy"
            wanted = {**attacker.settings(ctx), "seed": seed, "query_digest": query_digest, "attributes": attributes}
            stored = None if retrain else _load_json(json_path)
            recon = attacker.kind == "reconstruction"
            if stored and stored.get("settings") == wanted and (not recon or q_npy.is_file()):
                record = stored
                images = (np.load(q_npy), np.load(v_npy) if v_npy.is_file() else None) if recon else (None, None)
            else:
                training = attacker.fit(data, ctx, seed)
                evaluation = attacker.evaluate(data, ctx, seed)
                record = {"name": attacker.name, "kind": attacker.kind, "floor": attacker.floor,
                          "description": attacker.description, "settings": wanted, "seed": seed,
                          **evaluation.record, "training": training}
                images = (evaluation.query_images, evaluation.val_images)
                if recon:
                    _save_npy(q_npy, images[0])
                    if images[1] is not None:
                        _save_npy(v_npy, images[1])
                atomic_write_json(json_path, record)
            records.append(record)
            kept.append(images)
            fitted.append(attacker if stored is not record else None)
        combined, best = combine_seeds(records)
        if fitted[best] is not None:  # the seed that is reported is the one whose weights are kept
            after_fit(work, fitted[best])
        out[prototype.name] = combined
        if prototype.kind == "reconstruction":
            data.recon_query[prototype.name] = kept[best][0]
            if kept[best][1] is not None:
                data.recon_val[prototype.name] = kept[best][1]
    return out


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
        privacy[spec.name] = {
            "best_attacker": best, **{k: top.get(k) for k in CLASSIFICATION_KEYS}, "within": top.get("within", {}),
            "label_floor": label,
            "oracle_floor": {k: oracle.get(k) for k in CLASSIFICATION_KEYS} if oracle else None,
            "leakage_above_label": _minus(ba, label["balanced_accuracy"] if label else None),
            "leakage_above_oracle": _minus(ba, oracle.get("balanced_accuracy") if oracle else None),
            "per_attacker": per,
        }
    return privacy


def summarise_reconstruction(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The best (non-floor) reconstruction attacker by MS-SSIM and by PSNR, the best floor, every attacker."""
    per = {name: {**{k: rec.get(k) for k in IMAGE_KEYS}, "description": rec.get("description"),
                  "floor": rec.get("floor", False), "training": rec.get("training"), "seeds": rec.get("seeds"),
                  **({"start": rec["start"], "steps": rec["steps"], "start_ms_ssim": rec.get("start_ms_ssim")}
                     if "start" in rec else {})}
           for name, rec in records.items() if rec["kind"] == "reconstruction"}
    attackers = {n: r for n, r in per.items() if not r["floor"]}
    floors = {n: r for n, r in per.items() if r["floor"]}
    best, best_psnr, floor = _best(attackers, "ms_ssim"), _best(attackers, "psnr"), _best(floors, "ms_ssim")
    top = attackers.get(best, {})
    return {"best_attacker": best, **{k: top.get(k) for k in ("ms_ssim", "ms_ssim_ci95", "psnr", "psnr_ci95")},
            "best_psnr_attacker": best_psnr, "best_psnr": attackers[best_psnr]["psnr"] if best_psnr else None,
            "floor": {"attacker": floor, **{k: floors[floor].get(k) for k in IMAGE_KEYS}} if floor else None,
            "ms_ssim_above_floor": _minus(top.get("ms_ssim"), floors[floor]["ms_ssim"] if floor else None),
            "per_attacker": per}


def _short(privacy: dict[str, Any], reconstruction: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a repeated-query attack."""
    return {"privacy": {attr: {k: e[k] for k in ("best_attacker", "balanced_accuracy", "balanced_accuracy_ci95",
                                                 "majority_rate", "leakage_above_oracle", "oracle_floor")}
                        for attr, e in privacy.items()},
            "reconstruction": {k: reconstruction[k] for k in ("best_attacker", "ms_ssim", "ms_ssim_ci95", "psnr")}}


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
    setup = prepare(run, pipeline, settings, sources, progress)
    data, notes = setup.data, setup.notes
    floors = label_floors(data.test, data.private_specs, data.task_specs)

    by_repeat: dict[int, dict[str, dict[str, Any]]] = {}
    kept: dict[str, np.ndarray] = {}
    for repeat in settings.repeats(pipeline.stochastic):
        view = data if repeat == 1 else AttackData(
            data.train.with_repeat(repeat), data.val.with_repeat(repeat), data.test.with_repeat(repeat),
            data.query_rows, data.val_probe_rows, data.private_specs, data.task_specs, data.classifier)
        by_repeat[repeat] = run_attackers(attackers, setup, view, "" if repeat == 1 else f"@m{repeat}", retrain)
        if repeat == 1:
            kept = dict(view.recon_query)
    records = by_repeat[1]
    privacy = summarise_privacy(records, data.private_specs, floors)
    reconstruction = summarise_reconstruction(records)
    if not any(r["kind"] == "attribute" for r in records.values()) and data.private_specs:
        notes.append("no attribute attacker was run (--attackers)")
    if pipeline.stochastic:
        notes.append("the deployed pipeline is stochastic: attackers saw a fresh draw of the features every epoch "
                     "and at evaluation; repeated-query results (features averaged over m draws) are under 'repeated'")
    if data.train.excluded:
        notes.append(f"left out {data.train.excluded} attacker-training image(s) that are evaluation images")
    if setup.eval_excluded:
        notes.append(f"left out {setup.eval_excluded} evaluation image(s) that the attackers trained on")

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
        "settings": settings.as_dict(),
        "msssim": setup.ctx.msssim.as_dict(),
        "utility": setup.utility,
        "privacy": privacy,
        "reconstruction": reconstruction,
        "repeated": {str(m): _short(summarise_privacy(recs, data.private_specs, floors), summarise_reconstruction(recs))
                     for m, recs in by_repeat.items() if m != 1},
        "reid": reid,
        "notes": notes,
        "work_dir": str(setup.work),
        "files": {"markdown": md_path.name, "grid": grid_path.name if kept else None},
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
        rates = {name: r[variant] for name, r in per.items() if name not in floors}
        floor = _best({name: r[variant] for name, r in per.items() if name in floors}, "rate")
        out[f"{variant}_floor"] = per[floor][variant]["rate"] if floor else None
        best = _best(rates, "rate")
        out[variant] = rates[best]["rate"] if best else None
        out[f"{variant}_ci95"] = rates[best]["ci95"] if best else None
        out[f"{variant}_n"] = rates[best]["n"] if best else 0
        out[f"{variant}_attacker"] = best
    out["per_attacker"] = per
    return out
