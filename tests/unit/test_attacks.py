"""The attack suite on tiny real data: every attacker trains and evaluates; no test image reaches training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepobfuscator.attacks import ATTACKERS, AttackSettings, AttackSources, run_attack
from deepobfuscator.attacks import attribute, features, reconstruction
from deepobfuscator.attacks.reid import make_trials, run_trials
from deepobfuscator.losses import resolve_msssim
from deepobfuscator.config import MSSSIMConfig
from deepobfuscator.models import build_classifier, build_reconstructor
from deepobfuscator.registry import UnknownNameError
from deepobfuscator.runs import RunDir, RunError

TINY = dict(recon_epochs=1, attr_epochs=1, batch_size=16, inversion_images=3, inversion_steps=3, reid_images=8,
            grid_images=4, bootstrap=10, constant_steps=3, mlp_hidden=16)



@pytest.mark.parametrize("name", ["mirror", "urec1", "urec2", "resrec"])
@pytest.mark.parametrize("size", [(32, 32), (37, 29)])
def test_reconstructors_output_the_exact_image_size(name, size):
    hw = (size[0] // 4, size[1] // 4)
    model = build_reconstructor(name, 8, hw, size, width=0.0625)
    out = model(torch.randn(2, 8, *hw))
    assert out.shape == (2, 3, *size) and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("name", ["vgg", "resnet", "linear"])
def test_attribute_heads_give_one_logit_per_output(name):
    model = build_classifier(name, 8, (8, 8), 5, width=0.0625, fc_width=16)
    assert model(torch.randn(2, 8, 8, 8)).shape == (2, 5)


def test_every_attacker_trains_and_evaluates(run_copy: Path):
    result = run_attack(run_copy, AttackSettings(**TINY), progress=False)
    assert set(result["reconstruction"]["per_attacker"]) == {"mean_face", "median_face", "constant", "mirror", "urec1",
                                                             "urec2", "resrec", "inversion"}
    assert result["schema"] == 3 and result["reconstruction"]["floor"]["attacker"] in {"mean_face", "median_face",
                                                                                        "constant"}
    assert result["reconstruction"]["best_attacker"] not in {"mean_face", "median_face", "constant"}
    for rec in result["reconstruction"]["per_attacker"].values():
        assert 0.0 <= rec["ms_ssim"] <= 1.0 and rec["psnr"] > 0
    assert result["reconstruction"]["per_attacker"]["inversion"]["n"] == 3
    male = result["privacy"]["Male"]
    assert set(male["per_attacker"]) == {"vgg", "resnet", "linear", "mlp", "oracle"}
    assert male["best_attacker"] != "oracle" and male["per_attacker"]["oracle"]["floor"]
    best = male["per_attacker"][male["best_attacker"]]["balanced_accuracy"]
    assert best == male["balanced_accuracy"] == max(r["balanced_accuracy"] for n, r in male["per_attacker"].items()
                                                    if n != "oracle")
    assert male["oracle_floor"]["balanced_accuracy"] == male["per_attacker"]["oracle"]["balanced_accuracy"]
    assert 0 <= male["label_floor"]["balanced_accuracy"] <= 1 and male["label_floor"]["from"] == ["Smiling"]
    assert set(male["within"]["Smiling"]) == {"0", "1"} or len(male["within"]["Smiling"]) == 2
    assert sum(c["n"] for c in male["within"]["Smiling"].values()) == male["n"]
    for rec in male["per_attacker"].values():
        assert 1 <= rec["training"]["epochs"] <= 1 and len(rec["training"]["curve"]) == rec["training"]["epochs"]
    assert 0 < male["majority_rate"] <= 1 and male["n"] == result["eval_images"]
    assert set(result["utility"]["Smiling"]) >= {"accuracy", "balanced_accuracy", "majority_rate", "auc"}
    assert result["reid"]["chance"] == 0.25 and 0 <= result["reid"]["same_image"] <= 1
    assert result["reid"]["same_person"] is None or 0 <= result["reid"]["same_person"] <= 1
    saved = json.loads((run_copy / "attack.json").read_text())
    assert saved["dataset"] == "celeba" and saved["split"] == "test"
    assert (run_copy / "attack.md").read_text().startswith("# Attack evaluation")
    assert (run_copy / "recon_grid.png").stat().st_size > 0


def test_attacker_training_never_sees_test_split_images(run_copy: Path, monkeypatch):
    """Spy on every image and feature access: while any attacker trains, no test-split row may be read."""
    split = json.loads((run_copy / "split.json").read_text())
    test_rows = set(split["test"])
    state = {"training": False, "train_reads": set(), "eval_reads": set(), "fits": 0}
    real_images, real_features = features.images_to_dataset_tensor, features.FeatureSet.feature_tensor

    def spy_images(data, indices):
        state["train_reads" if state["training"] else "eval_reads"].update(int(i) for i in indices)
        return real_images(data, indices)

    def spy_features(self, rows):
        state["train_reads" if state["training"] else "eval_reads"].update(int(i) for i in self.indices[rows])
        return real_features(self, rows)

    def training(fn):
        def wrapped(model, train, *args, **kwargs):
            state["training"], state["fits"] = True, state["fits"] + 1
            assert not set(train.indices.tolist()) & test_rows
            try:
                return fn(model, train, *args, **kwargs)
            finally:
                state["training"] = False
        return wrapped

    monkeypatch.setattr(features, "images_to_dataset_tensor", spy_images)
    monkeypatch.setattr(features.FeatureSet, "feature_tensor", spy_features)
    monkeypatch.setattr(reconstruction, "fit_model", training(reconstruction.fit_model))
    monkeypatch.setattr(attribute, "fit_model", training(attribute.fit_model))
    run_attack(run_copy, AttackSettings(**TINY, attackers=["mirror", "urec1", "vgg", "linear"]),
               out=run_copy / "leak.json", retrain=True, progress=False)
    assert state["fits"] == 4
    assert state["train_reads"] and not state["train_reads"] & test_rows
    assert test_rows <= state["eval_reads"]  # the spy does see the test split, at evaluation


def test_finished_attackers_are_not_retrained(run_copy: Path, monkeypatch):
    settings = AttackSettings(**TINY, attackers=["mirror", "linear"])
    run_attack(run_copy, settings, out=run_copy / "resume.json", progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("attacker retrained")

    monkeypatch.setattr(reconstruction, "fit_model", forbidden)
    monkeypatch.setattr(attribute, "fit_model", forbidden)
    again = run_attack(run_copy, settings, out=run_copy / "resume.json", progress=False)
    assert again["reconstruction"]["best_attacker"] == "mirror" and "linear" in again["privacy"]["Male"]["per_attacker"]
    with pytest.raises(AssertionError, match="retrained"):
        run_attack(run_copy, settings, out=run_copy / "resume.json", retrain=True, progress=False)
    with pytest.raises(AssertionError, match="retrained"):  # other budget: the stored result does not apply
        run_attack(run_copy, AttackSettings(**{**TINY, "recon_epochs": 2}, attackers=["mirror"]),
                   out=run_copy / "resume.json", progress=False)


def test_realistic_attacker_drops_evaluation_images_from_public_data(run_copy: Path, celeba_root: Path):
    sources = AttackSources(attacker_root=str(celeba_root), max_images=120)
    result = run_attack(run_copy, AttackSettings(**TINY, attackers=["linear"]), sources, out=run_copy / "public.json",
                        progress=False)
    from deepobfuscator.data import load_index, make_split

    run_test = set(json.loads((run_copy / "split.json").read_text())["test"])
    index = load_index("celeba", celeba_root, 120)
    public = make_split(index, 0, [0.8, 0.1, 0.1], stratify=index.stratify)  # the run's split settings
    overlap = len(run_test & set(public["train"]))  # row i is the same file in both (first N of one root)
    assert overlap > 0
    assert result["attacker_train"]["excluded_eval_images"] == overlap
    assert result["attacker_train"]["images"] == len(public["train"]) - overlap
    assert "Male" in result["privacy"] and any("left out" in n for n in result["notes"])


def test_attributes_missing_in_another_dataset_are_skipped_with_a_note(run_copy: Path, celeba_root: Path):
    from deepobfuscator.data import LOADERS, load_celeba, register_loader

    def without_male(root, max_images):
        index = load_celeba(root, max_images)
        index.labels.pop("Male")
        index.specs.pop("Male")
        return index

    register_loader("celeba-no-male", without_male)
    try:
        result = run_attack(run_copy, AttackSettings(**TINY, attackers=["linear", "mirror"]),
                            AttackSources(data_root=str(celeba_root), dataset="celeba-no-male", max_images=96),
                            out=run_copy / "nomale.json", progress=False)
    finally:
        LOADERS.pop("celeba-no-male")
    assert result["privacy"] == {} and "Smiling" in result["utility"]
    assert any("Male" in note for note in result["notes"])
    assert result["eval_images"] < 96


def test_check_disjoint_raises_on_shared_images(run_copy: Path):
    from deepobfuscator.runs import open_run_data

    pipeline = features.load_pipeline(RunDir(run_copy))
    cfg, modules = pipeline.cfg, pipeline.modules
    data, _ = open_run_data(RunDir(run_copy), cfg, progress=False)
    rows, _ = features.select_rows(data, "test", "t")
    test = features.extract_features(pipeline, data, rows, "test", "t", progress=False)
    assert torch.equal(features.obfuscate(cfg, modules, test.image_tensor(np.arange(2))),
                       modules.obfuscator(test.image_tensor(np.arange(2))))
    with pytest.raises(RunError, match="shares"):
        features.check_disjoint(test, test)


def _fake_data(images: np.ndarray):
    class Data:
        pass

    data = Data()
    data.images = images
    return data


def test_reid_trials_and_known_rates():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)
    identities = np.repeat(np.arange(20), 3)
    queries = np.arange(0, 60, 2)
    trials = make_trials(queries, 60, identities, "same_person", seed=1)
    assert len(trials) == len(queries)
    for q, cands, answer in zip(trials.query, trials.candidates, trials.answer):
        query = queries[q]
        assert len(set(cands.tolist())) == 4 and query not in cands
        assert identities[cands[answer]] == identities[query]
        assert sum(identities[c] == identities[query] for c in cands) == 1
    settings = resolve_msssim(MSSSIMConfig(), (32, 32))
    same = make_trials(queries, 60, identities, "same_image", seed=1)
    perfect = run_trials(images[queries], same, _fake_data(images), "msssim", settings, seed=0)
    assert perfect["rate"] == 1.0 and perfect["n"] == len(queries)
    grey = np.full((len(queries), 32, 32, 3), 128, np.uint8)
    many = make_trials(np.tile(queries, 10), 60, identities, "same_image", seed=2)
    blind = run_trials(np.tile(grey, (10, 1, 1, 1)), many, _fake_data(images), "mse", settings, seed=0)
    assert 0.15 < blind["rate"] < 0.35  # chance is 25%
    assert len(make_trials(queries, 60, None, "same_person", seed=1)) == 0


def test_unknown_attacker_is_rejected(run_copy: Path):
    with pytest.raises(UnknownNameError, match="did you mean 'mirror'"):
        run_attack(run_copy, AttackSettings(**TINY, attackers=["miror"]), progress=False)
    assert set(ATTACKERS.names()) >= {"mirror", "inversion", "linear", "mlp", "oracle", "constant"}
