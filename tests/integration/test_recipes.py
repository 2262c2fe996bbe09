"""The recipes of docs/architecture.md, end to end at the tiny preset: a defence and a dataset loader
registered from this file are trained by `deepobf train` and evaluated by `deepobf attack`."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from deepobfuscator.attacks.features import obfuscate
from deepobfuscator.cli import main
from deepobfuscator.config import RunConfig
from deepobfuscator.data import LOADERS, AttributeSpec, DatasetIndex, DataError, register_loader
from deepobfuscator.methods import METHODS, Method, load_trained, no_adversarial, register_method
from deepobfuscator.methods.params import MethodParams, param, validate_params
from deepobfuscator.runs import RunDir
from deepobfuscator.training import Trainer
from deepobfuscator.training.precision import apply_precision

TINY_ATTACK = ["--attackers", "mirror,linear", "--epochs", "1", "--reid-images", "4", "--grid-images", "2",
               "--bootstrap", "20", "--no-progress", "--threads", "1"]


# ----------------------------------------------------------------------------- recipe: add a defence
class FeatureNoise:
    """Gaussian noise of std ``sigma`` added to every feature, drawn fresh for every release."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """Noisy features."""
        return feats + torch.randn_like(feats) * self.sigma


class FeatureNoiseParams(MethodParams):
    """The recipe's typed parameters (validated by `configure`; unknown or ill-typed keys are named)."""

    sigma: float = param(0.5, "std of the Gaussian noise on every feature", gt=0)


def feature_noise(cfg: RunConfig, run_path: Path) -> FeatureNoise:
    """The deployed feature transform (stateless: built from the config)."""
    return FeatureNoise(validate_params(FeatureNoiseParams, cfg.params, "featnoise").sigma)


class FeatureNoiseTrainer(Trainer):
    """Algorithm 1's stages 1-2 on noisy features (the transform is on ``modules``); no adversarial stage."""

    @classmethod
    def cache_signature(cls, cfg: RunConfig, stage: int) -> dict[str, Any]:
        """Every stage depends on the noise level."""
        return {"featnoise": dict(cfg.params)}


@pytest.fixture
def featnoise() -> Iterator[Method]:
    """The recipe's method, registered for one test."""
    method = register_method(Method(
        "featnoise", "FeatureNoise", "Gaussian noise on O's output; O+C trained on noisy features",
        params=FeatureNoiseParams, configure=no_adversarial, trainer_cls=FeatureNoiseTrainer,
        feature_transform=feature_noise))
    try:
        yield method
    finally:
        METHODS.pop("featnoise")


def test_recipe_add_a_defence(featnoise: Method, tmp_path: Path, celeba_root: Path, capsys,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Trainer] = []
    original = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: (seen.append(self), original(self))[1])
    out = tmp_path / "featnoise"
    assert main(["train", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--no-progress",
                 "--set", "method=featnoise", "--set", "method.sigma=0.25"]) == 0
    assert type(seen[-1]) is FeatureNoiseTrainer
    cfg, modules = load_trained(RunDir(out))  # what deepobf attack loads, then obfuscate()s
    assert cfg.params == {"sigma": 0.25} and cfg.train.epochs_adversarial == 0
    assert isinstance(modules.feature_transform, FeatureNoise) and modules.feature_transform.sigma == 0.25
    probe = torch.rand(2, 3, 32, 32)
    # randn_like draws in memory order: same seed, same layout as training (train.channels_last, recorded resolved)
    apply_precision(modules, channels_last=cfg.train.channels_last is True)
    with torch.no_grad():
        torch.manual_seed(0)
        trained = seen[-1].encode(probe)
        torch.manual_seed(0)
        attacked = obfuscate(cfg, modules, probe)
        assert torch.equal(trained, attacked) and not torch.equal(attacked, modules.obfuscator(probe))
    assert main(["attack", str(out), *TINY_ATTACK]) == 0
    result = json.loads((out / "attack.json").read_text())
    assert result["method"] == "featnoise" and "Male" in result["privacy"]
    capsys.readouterr()
    assert main(["baseline"]) == 0  # listed beside the built-in methods
    assert "featnoise" in capsys.readouterr().out


def test_recipe_defence_rejects_bad_parameters(featnoise: Method, tmp_path: Path, celeba_root: Path, capsys) -> None:
    out = tmp_path / "bad"
    assert main(["train", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--no-progress",
                 "--set", "method=featnoise", "--set", "method.sigmaa=1"]) == 2
    assert "featnoise takes no parameter 'sigmaa'" in capsys.readouterr().err
    assert main(["train", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--no-progress",
                 "--set", "method=featnoise", "--set", "method.sigma=-1"]) == 2
    assert "method.sigma: Input should be greater than 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- recipe: add a dataset loader
def load_squares(root: Path, max_images: int | None) -> DatasetIndex:
    """A folder of PNGs with ``labels.csv`` (file,Bright,Reddish; 0/1 labels)."""
    table = root / "labels.csv"
    if not table.is_file():
        raise DataError(f"{table}: file not found (a squares root has labels.csv beside its images)")
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    files = [root / row["file"] for row in rows]
    labels = {name: np.asarray([int(row[name]) for row in rows], dtype=np.int64) for name in ("Bright", "Reddish")}
    index = DatasetIndex("squares", root, files, labels, {n: AttributeSpec(n, 2) for n in labels},
                         source_files=[table])
    return index.subset(max_images)


def _write_squares(root: Path, n: int = 64) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "Bright", "Reddish"])
        for i in range(n):
            bright, red = int(rng.integers(2)), int(rng.integers(2))
            base = rng.integers(0, 60, (40, 40, 3)) + (140 if bright else 20)
            base[..., 0] += 50 if red else 0
            Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(root / f"{i:03d}.png")
            writer.writerow([f"{i:03d}.png", bright, red])


@pytest.fixture
def squares() -> Iterator[None]:
    """The recipe's loader, registered for one test."""
    register_loader("squares", load_squares, "coloured squares with labels.csv")
    try:
        yield
    finally:
        LOADERS.pop("squares")


def test_recipe_add_a_dataset_loader(squares: None, tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "squares", tmp_path / "run"
    _write_squares(root)
    assert main(["data", "check", str(root), "--dataset", "squares"]) == 0
    assert "squares: 64 images" in capsys.readouterr().out
    assert main(["train", "--preset", "tiny", "--dataset", "squares", "--data", str(root), "--task", "Bright",
                 "--private", "Reddish", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert set(summary["majority_rate"]) == {"Bright", "Reddish"}
    assert main(["attack", str(out), *TINY_ATTACK]) == 0
    result = json.loads((out / "attack.json").read_text())
    assert "Reddish" in result["privacy"] and "Bright" in result["utility"]


def test_unknown_dataset_names_the_field_and_suggests(tmp_path: Path, capsys) -> None:
    assert main(["train", "--preset", "tiny", "--dataset", "celebb", "--data", str(tmp_path), "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.dataset" in err and "did you mean 'celeba'" in err
