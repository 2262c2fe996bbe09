"""The attack suite: every attacker trained from scratch on frozen train-split features, scored on the
evaluation split; writes ``attack.json``, ``attack.md`` and ``recon_grid.png``.

Per-attacker results live under ``RUN/attack/<tag>/`` (``<name>.json`` and, for reconstructors,
``<name>.recon.npy``); a stored result whose settings match is reused, so an interrupted attack
resumes at the first unfinished attacker.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import PreparedData
from ..losses import resolve_msssim, split_logits
from ..runs import RunDir, run_specs
from ..utils import atomic_write_bytes, atomic_write_json, atomic_write_text, resolve_device
from .attribute import score_logits
from .base import AttackContext, AttackSettings
from .features import FeatureSet, check_disjoint, extract_features, load_pipeline
from .reconstruction import evaluate_reconstruction
from .registry import get_attackers
from .reid import CHANCE, make_trials, run_trials
from .report import render_markdown, save_grid
from .saved import save_attacker
from .sources import AttackSources, open_source, usable_specs

SCHEMA_VERSION = 1


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
    import io

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


def run_attack(run_path: str | Path, settings: AttackSettings | None = None, sources: AttackSources | None = None,
               out: str | Path | None = None, retrain: bool = False, progress: bool = True) -> dict[str, Any]:
    """Attack a trained run; write attack.json/.md and the grid; return the attack.json content."""
    settings = settings or AttackSettings()
    sources = sources or AttackSources()
    settings.validate()
    attackers = get_attackers(settings.attackers)
    started = time.perf_counter()
    run = RunDir(Path(run_path))
    device = resolve_device(settings.device)
    cfg, modules = load_pipeline(run, device)
    task_specs, private_specs = run_specs(cfg)
    msssim = resolve_msssim(cfg.msssim, cfg.data.image_size)
    ctx = AttackContext(cfg, modules, settings, msssim, device, progress)

    evaluation = open_source(run, cfg, sources.dataset, sources.data_root, sources.max_images, progress)
    if sources.attacker_root is not None:
        attacker_src = open_source(run, cfg, sources.attacker_dataset or cfg.data.dataset, sources.attacker_root,
                                    sources.max_images, progress)
    elif sources.attacker_dataset is not None:
        raise ValueError("--attacker-dataset needs --attacker-data ROOT")
    else:
        attacker_src = evaluation
    notes = evaluation.notes + [n for n in attacker_src.notes if attacker_src is not evaluation]
    utility_specs = usable_specs(task_specs, [evaluation], notes)
    privacy_specs = usable_specs(private_specs, [evaluation, attacker_src], notes)

    # -------------------------------------------------------------- evaluation features (+ deployed C logits)
    c_logits: list[torch.Tensor] = []
    modules.classifier.eval()
    test = extract_features(
        cfg, modules, evaluation.data, settings.split, f"{evaluation.dataset}:{evaluation.root}:{settings.split}",
        settings.eval_batch_size, device, progress=progress,
        on_batch=lambda feats, rows: c_logits.append(modules.classifier(feats).float().cpu()))
    logits = torch.cat(c_logits)
    blocks = dict(zip([s.name for s in task_specs], split_logits(logits, task_specs)))
    utility = {spec.name: score_logits(blocks[spec.name], test.labels(spec.name), spec, settings.bootstrap,
                                       settings.seed) for spec in utility_specs}

    n_query = min(len(test), max(settings.reid_images, settings.grid_images, settings.inversion_images))
    query_rows = np.random.default_rng([settings.seed, 7]).permutation(len(test))[:n_query]
    query_indices = test.indices[query_rows]
    source_key = {"weights": _file_digest(run.final), "eval": [evaluation.dataset, evaluation.root, settings.split,
                  len(test), _digest(test.indices.tolist())], "attacker": [attacker_src.dataset, attacker_src.root],
                  "max_images": sources.max_images}
    work = run.path / "attack" / f"{evaluation.dataset}-{settings.split}-{_digest(source_key)}"
    work.mkdir(parents=True, exist_ok=True)
    query_digest = _digest(query_indices.tolist())

    # -------------------------------------------------------------- attacker training features (lazy)
    train_holder: list[FeatureSet] = []
    train_record = work / "attacker_train.json"

    def train_features() -> FeatureSet:
        if not train_holder:
            exclude = test.files() if attacker_src is not evaluation else None
            train = extract_features(
                cfg, modules, attacker_src.data, "train", f"{attacker_src.dataset}:{attacker_src.root}:train",
                settings.eval_batch_size, device, limit=settings.max_train_images, exclude=exclude,
                seed=settings.seed, progress=progress)
            check_disjoint(train, test)
            atomic_write_json(train_record, {"images": len(train), "excluded": train.excluded,
                                             "max_train_images": settings.max_train_images})
            train_holder.append(train)
        return train_holder[0]

    # -------------------------------------------------------------- attackers, resumable one by one
    recon_results: dict[str, dict[str, Any]] = {}
    recon_images: dict[str, np.ndarray] = {}
    attr_results: dict[str, dict[str, Any]] = {}
    for attacker in attackers:
        path = work / f"{attacker.name}.json"
        wanted = attacker.relevant_settings(ctx)
        stored = None if retrain else _load_json(path)
        if attacker.kind == "reconstruction":
            npy = work / f"{attacker.name}.recon.npy"
            if (stored and stored.get("settings") == wanted and stored.get("query_digest") == query_digest
                    and npy.is_file()):
                recon_results[attacker.name], recon_images[attacker.name] = stored, np.load(npy)
                continue
            reconstruct, stats = attacker.prepare(train_features() if attacker.trains else None, ctx)
            rows = attacker.eval_rows(test, query_rows, ctx)
            report, images = evaluate_reconstruction(reconstruct, test, rows, query_rows, ctx,
                                                     desc=f"evaluate {attacker.name}")
            record = {"name": attacker.name, "kind": attacker.kind, "description": attacker.description,
                      "settings": wanted, "query_digest": query_digest, **report, "training": stats}
            _save_npy(npy, images)
            atomic_write_json(path, record)
            recon_results[attacker.name], recon_images[attacker.name] = record, images
        else:
            names = [s.name for s in privacy_specs]
            if stored and stored.get("settings") == wanted and stored.get("attributes") == names:
                attr_results[attacker.name] = stored
                continue
            results = attacker.attack(train_features(), test, privacy_specs, ctx) if privacy_specs else {}
            record = {"name": attacker.name, "kind": attacker.kind, "description": attacker.description,
                      "settings": wanted, "attributes": names, "results": results}
            atomic_write_json(path, record)
            attr_results[attacker.name] = record
        state = attacker.state() if hasattr(attacker, "state") else None  # just fitted: keep it for `inspect`
        if state is not None:
            save_attacker(work, attacker.name, state[0], {**state[1], "settings": wanted})

    # -------------------------------------------------------------- assemble
    privacy: dict[str, Any] = {}
    for spec in privacy_specs:
        per = {name: rec["results"][spec.name] for name, rec in attr_results.items() if spec.name in rec["results"]}
        best = _best(per, "balanced_accuracy")
        top = per.get(best, {})
        privacy[spec.name] = {"best_attacker": best, **{k: top.get(k) for k in (
            "accuracy", "accuracy_ci95", "balanced_accuracy", "balanced_accuracy_ci95", "auc", "auc_ci95",
            "majority_rate", "n")}, "per_attacker": per}
    if not attr_results and privacy_specs:
        notes.append("no attribute attacker was run (--attackers)")

    per_recon = {name: {k: rec[k] for k in ("description", "n", "ms_ssim", "ms_ssim_ci95", "psnr", "psnr_ci95",
                                             "training")} for name, rec in recon_results.items()}
    best_recon, best_psnr = _best(per_recon, "ms_ssim"), _best(per_recon, "psnr")
    reconstruction = {"best_attacker": best_recon,
                      "ms_ssim": per_recon[best_recon]["ms_ssim"] if best_recon else None,
                      "ms_ssim_ci95": per_recon[best_recon]["ms_ssim_ci95"] if best_recon else None,
                      "psnr": per_recon[best_recon]["psnr"] if best_recon else None,
                      "psnr_ci95": per_recon[best_recon]["psnr_ci95"] if best_recon else None,
                      "best_psnr_attacker": best_psnr,
                      "best_psnr": per_recon[best_psnr]["psnr"] if best_psnr else None,
                      "per_attacker": per_recon}

    train_info = _load_json(train_record) or {}
    if train_info.get("excluded"):
        notes.append(f"left out {train_info['excluded']} attacker-training image(s) that are evaluation images")
    reid = _reid(evaluation.data, query_indices[:settings.reid_images], recon_images, settings, msssim, notes)
    json_path, md_path, grid_path = output_paths(run, out)
    result = {
        "schema": SCHEMA_VERSION,
        "run": str(run.path),
        "method": cfg.method,
        "run_seed": cfg.train.seed,
        "dataset": evaluation.dataset,
        "data_root": evaluation.root,
        "split": settings.split,
        "eval_images": len(test),
        "attacker_train": {"dataset": attacker_src.dataset, "root": attacker_src.root, "split": "train",
                           "images": train_info.get("images"), "excluded_eval_images": train_info.get("excluded", 0)},
        "settings": settings.as_dict(),
        "msssim": msssim.as_dict(),
        "utility": utility,
        "privacy": privacy,
        "reconstruction": reconstruction,
        "reid": reid,
        "notes": notes,
        "work_dir": str(work),
        "files": {"markdown": md_path.name, "grid": grid_path.name if recon_images else None},
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, render_markdown(result))
    if recon_images and settings.grid_images:
        raw = np.stack([evaluation.data.images[i] for i in query_indices[:settings.grid_images]])
        save_grid(grid_path, raw, [(name, imgs[:settings.grid_images]) for name, imgs in recon_images.items()])
    return result


def _reid(data: PreparedData, query_indices: np.ndarray, recon_images: dict[str, np.ndarray],
          settings: AttackSettings, msssim: Any, notes: list[str]) -> dict[str, Any]:
    """Re-identification rates of every reconstructor; top level = the best attacker per variant."""
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
        rates = {name: r[variant] for name, r in per.items()}
        best = _best(rates, "rate")
        out[variant] = rates[best]["rate"] if best else None
        out[f"{variant}_ci95"] = rates[best]["ci95"] if best else None
        out[f"{variant}_n"] = rates[best]["n"] if best else 0
        out[f"{variant}_attacker"] = best
    out["per_attacker"] = per
    return out
