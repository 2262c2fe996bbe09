"""The "Add an attacker" recipe (docs/architecture.md, "Recipe: add an attacker"), run end to end: an attacker defined in this
file is registered by name and judged by `deepobf attack` like the built-in ones."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepobfuscator.attacks import ATTACKERS, FITTED_HOOKS, AttackContext, AttackData, Evaluation
from deepobfuscator.attacks.attribute import score_logits
from deepobfuscator.cli import main


class NearestCentroid:
    """Predict a private attribute from the class mean of the flattened features nearest to each image."""

    name = "centroid"
    kind = "attribute"
    description = "nearest class centroid of the flattened features"
    floor = False

    def __init__(self) -> None:
        self.centroids: dict[str, torch.Tensor] = {}

    def settings(self, ctx: AttackContext) -> dict[str, Any]:
        return {"max_train_images": ctx.settings.max_train_images}

    def fit(self, data: AttackData, ctx: AttackContext, seed: int) -> dict[str, Any]:
        feats = data.train.feature_tensor(np.arange(len(data.train))).flatten(1)
        for spec in data.private_specs:
            labels = torch.from_numpy(data.train.labels(spec.name))
            self.centroids[spec.name] = torch.stack([feats[labels == k].mean(0) for k in range(spec.num_classes)])
        return {"train_images": len(data.train)}

    def evaluate(self, data: AttackData, ctx: AttackContext, seed: int) -> Evaluation:
        feats = data.test.feature_tensor(np.arange(len(data.test))).flatten(1)
        results = {}
        for spec in data.private_specs:
            distance = torch.cdist(feats, self.centroids[spec.name])
            logits = (distance[:, :1] - distance[:, 1:2]) if spec.binary else -distance  # closer to 1 -> positive
            results[spec.name] = score_logits(logits, data.test.labels(spec.name), spec, ctx.settings.bootstrap, seed)
        return Evaluation({"results": results})

    def state(self) -> tuple[nn.Module, dict[str, Any]] | None:
        holder = nn.Module()
        for name, c in self.centroids.items():
            holder.register_buffer(name, c)
        return holder, {"kind": self.kind, "attributes": list(self.centroids)}


def test_a_registered_attacker_runs_end_to_end(trained_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    fitted: list[tuple[str, list[str]]] = []
    ATTACKERS.add("centroid", NearestCentroid, "nearest class centroid (test recipe)")
    FITTED_HOOKS.append(lambda work, name, module, spec: fitted.append((name, sorted(dict(module.named_buffers())))))
    try:
        assert main(["attack", str(run), "--attackers", "centroid,linear", "--epochs", "1", "--bootstrap", "10",
                     "--inversion-images", "2", "--reid-images", "4", "--grid-images", "2", "--no-progress"]) == 0
    finally:
        ATTACKERS.pop("centroid")  # leave the registry as the suite found it
        FITTED_HOOKS.clear()
    result = json.loads((run / "attack.json").read_text())
    male = result["privacy"]["Male"]["per_attacker"]
    assert set(male) == {"centroid", "linear"} and 0 <= male["centroid"]["balanced_accuracy"] <= 1
    assert male["centroid"]["n"] == result["eval_images"]
    assert ("centroid", ["Male"]) in fitted  # the fitted-attacker hook saw the registered attacker's state
    assert "centroid" in (run / "attack.md").read_text()
