"""Saved attackers: build specs rebuild the same module, weights round-trip, stale weights are not used."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepobfuscator.attacks.saved import build_spec, load_attacker, load_attackers, rebuild, save_attacker, take_fitted
from deepobfuscator.models import build_classifier, build_reconstructor
from deepobfuscator.registry import UnknownNameError
from deepobfuscator.runs import RunError

RECON_ARGS = dict(in_channels=8, feature_hw=(4, 4), image_size=(16, 16), width=0.0625, batch_norm=True)
CLF_ARGS = dict(in_channels=8, feature_hw=(4, 4), num_outputs=1, width=0.0625, fc_width=8, batch_norm=True, dropout=0.5)


def _fitted_reconstructor() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(3)
    model = build_reconstructor("urec1", **RECON_ARGS)
    with torch.no_grad():  # weights and BatchNorm statistics that differ from a fresh build
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(torch.randn_like(buf))
    spec = build_spec("reconstructor", "urec1", RECON_ARGS, attacker="urec1", kind="reconstruction",
                      settings={"epochs": 1})
    return model.eval(), spec


def test_saved_attacker_round_trips_weights_and_spec(tmp_path: Path) -> None:
    model, spec = _fitted_reconstructor()
    save_attacker(tmp_path, "urec1", model, spec)
    loaded, got = load_attacker(tmp_path, "urec1")
    assert got["factory"] == "reconstructor" and got["args"]["feature_hw"] == [4, 4] and got["name"] == "urec1"
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        assert not torch.allclose(rebuild(spec).eval()(x), model(x))  # the weights, not the build, carry the fit
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_build_spec_rejects_unknown_factories_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'classifier'"):
        build_spec("clasifier", "linear", CLF_ARGS)
    with pytest.raises(RunError, match="no saved attacker 'vgg.Male'"):
        load_attacker(tmp_path, "vgg.Male")
    save_attacker(tmp_path, "linear.Male", build_classifier("linear", **CLF_ARGS), build_spec("classifier", "linear",
                                                                                             CLF_ARGS))
    (tmp_path / "fitted" / "linear.Male.json").write_text("{")
    with pytest.raises(RunError, match="linear.Male.json: not valid JSON"):
        load_attacker(tmp_path, "linear.Male")
    with pytest.raises(ValueError, match="file name"):
        save_attacker(tmp_path, "../x", build_classifier("linear", **CLF_ARGS), build_spec("classifier", "linear",
                                                                                         CLF_ARGS))


def test_take_fitted_hands_modules_over_once() -> None:
    class Attacker:
        fitted = {"linear.Male": ("module", {"factory": "classifier"})}

    attacker = Attacker()
    assert take_fitted(attacker) == {"linear.Male": ("module", {"factory": "classifier"})}
    assert take_fitted(attacker) == {}
    assert take_fitted(object()) == {}


def _attack_json(run: Path, work: Path, settings: dict) -> None:
    (work / "urec1.json").write_text(json.dumps({"settings": settings}))
    (run / "attack.json").write_text(json.dumps({
        "split": "test", "eval_images": 10, "work_dir": str(Path("/elsewhere/attack") / work.name),
        "reconstruction": {"best_attacker": "inversion", "per_attacker": {
            "urec1": {"ms_ssim": 0.5, "n": 10}, "inversion": {"ms_ssim": 0.6, "n": 2}}},
        "privacy": {"Male": {"per_attacker": {"linear": {"balanced_accuracy": 0.6, "majority_rate": 0.55}}}},
    }))


def test_load_attackers_reads_the_latest_attack_and_skips_stale_weights(tmp_path: Path) -> None:
    run = tmp_path / "run"
    work = run / "attack" / "celeba-test-abc"
    work.mkdir(parents=True)
    assert load_attackers(run) is None  # never attacked
    model, spec = _fitted_reconstructor()
    save_attacker(work, "urec1", model, spec)
    _attack_json(run, work, {"epochs": 1})  # work_dir recorded elsewhere: the run was moved
    found = load_attackers(run)
    assert found and found.best_reconstructor == "inversion" and found.split == "test"
    assert [a.attacker for a in found.reconstructors] == ["urec1"] and found.reconstructors[0].metrics["ms_ssim"] == 0.5
    assert sorted(found.unsaved) == ["inversion", "linear.Male"] and found.attributes == {"Male": []}
    _attack_json(run, work, {"epochs": 5})  # the stored result was refitted with other settings since
    stale = load_attackers(run)
    assert not stale and "urec1" in stale.unsaved
