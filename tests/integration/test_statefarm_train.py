"""A few Algorithm 1 steps on State Farm: 10-way behaviour and 26-way driver, both with cross-entropy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepobfuscator.config import preset
from deepobfuscator.methods import load_trained
from deepobfuscator.runs import RunDir
from deepobfuscator.methods import train_run


def _train_statefarm(root: Path, tmp_path: Path, max_images: int, drivers: int) -> None:
    """Train the tiny preset on a State Farm root and check the multi-class run it leaves."""
    cfg = preset("tiny")
    sf = preset("statefarm-cpu")
    cfg.data.dataset, cfg.data.task, cfg.data.private = sf.data.dataset, sf.data.task, sf.data.private
    cfg.data.root = str(root)
    cfg.data.image_size = [36, 48]  # 3:4 like the preset's 48x64, the smallest height VGG's pools allow
    cfg.data.max_images = max_images
    summary = train_run(cfg, tmp_path / "run", progress=False)

    run = RunDir(tmp_path / "run")
    saved = run.read_config()
    assert [(s["name"], s["num_classes"]) for s in saved.meta["task_specs"]] == [("behaviour", 10)]
    assert [(s["name"], s["num_classes"]) for s in saved.meta["private_specs"]] == [("driver", drivers)]
    _, modules = load_trained(run)
    assert modules.classifier.head[-1].out_features == 10 and modules.adversary.head[-1].out_features == drivers

    split = json.loads(run.split.read_text())
    parts = [np.asarray(split[k]) for k in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == max_images and len(np.unique(np.concatenate(parts))) == max_images

    records = run.read_metrics()
    assert [r["stage"] for r in records] == ["pretrain", "attacker", "adversarial"]
    for rec in records[1:]:
        assert 0.0 <= rec["AC_acc"]["driver"] <= 1.0
    assert set(summary["test"]["C_acc"]) == {"behaviour"} and set(summary["test"]["AC_acc"]) == {"driver"}
    assert summary["majority_rate"]["driver"] < 0.5


@pytest.mark.shared
def test_statefarm_multiclass_training_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    _train_statefarm(shared_data / "statefarm", tmp_path, max_images=128, drivers=26)


def test_statefarm_training_on_a_test_made_tree(statefarm_tree: Path, tmp_path: Path) -> None:
    _train_statefarm(statefarm_tree, tmp_path, max_images=120, drivers=4)
