"""Saved attackers: build specs rebuild the same module, weights round-trip, stale weights are not used."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deepobfuscator.attacks.heads import build_from_spec as build_model
from deepobfuscator.attacks.heads import classifier_spec, reconstructor_spec
from deepobfuscator.attacks.saved import load_attacker, load_attackers, rebuild, save_attacker
from deepobfuscator.config import ModelConfig
from deepobfuscator.runs import RunError

MODEL = ModelConfig(width=0.0625, fc_width=8, batch_norm=True, dropout=0.5)
RECON = reconstructor_spec("urec1", (8, 4, 4), (16, 16), MODEL)
LINEAR = classifier_spec("linear", (8, 4, 4), 1, MODEL, mlp_hidden=16)


def _fitted_reconstructor() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(3)
    model = build_model(RECON)
    with torch.no_grad():  # weights and BatchNorm statistics that differ from a fresh build
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(torch.randn_like(buf))
    return model.eval(), {"kind": "reconstruction", "model": RECON, "settings": {"epochs": 1}}


def test_saved_attacker_round_trips_weights_and_spec(tmp_path: Path) -> None:
    model, spec = _fitted_reconstructor()
    save_attacker(tmp_path, "urec1", model, spec)
    loaded, got = load_attacker(tmp_path, "urec1")
    assert got["model"]["role"] == "reconstructor" and got["model"]["image_size"] == [16, 16] and got["name"] == "urec1"
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        assert not torch.allclose(rebuild(spec).eval()(x), model(x))  # the weights, not the build, carry the fit
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_a_saved_attacker_runs_in_the_precision_it_was_fitted_in(tmp_path: Path) -> None:
    model, spec = _fitted_reconstructor()
    save_attacker(tmp_path, "float32", model, spec)
    save_attacker(tmp_path, "bf16", model, {**spec, "amp": "bf16"})
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        exact, rounded = load_attacker(tmp_path, "float32")[0](x), load_attacker(tmp_path, "bf16")[0](x)
        torch.testing.assert_close(exact, model(x))
        assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
        torch.testing.assert_close(rounded, exact, atol=0.05, rtol=0.05)
    torch.manual_seed(0)
    per_attribute = torch.nn.ModuleDict({"Male": build_model(LINEAR)}).eval()
    save_attacker(tmp_path, "linear", per_attribute, {"kind": "attribute", "attributes": {"Male": LINEAR},
                                                      "amp": "bf16"})
    loaded = load_attacker(tmp_path, "linear")[0]["Male"]  # what inspect calls: the attribute's own model
    with torch.no_grad():
        out = loaded(x)
        assert out.dtype == torch.float32 and not torch.equal(out, per_attribute["Male"](x))


def test_attribute_attackers_round_trip_one_model_per_attribute(tmp_path: Path) -> None:
    torch.manual_seed(0)
    models = torch.nn.ModuleDict({"Male": build_model(LINEAR), "Young": build_model(LINEAR)})
    spec = {"kind": "attribute", "attributes": {"Male": LINEAR, "Young": LINEAR}, "through_classifier": False}
    save_attacker(tmp_path, "linear", models, spec)
    loaded, _ = load_attacker(tmp_path, "linear")
    x = torch.randn(3, 8, 4, 4)
    with torch.no_grad():
        for name in ("Male", "Young"):
            torch.testing.assert_close(loaded[name](x), models[name].eval()(x))


def test_broken_specs_and_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="role"):
        build_model({**RECON, "role": "decoder"})
    with pytest.raises(RunError, match="no saved attacker 'vgg'"):
        load_attacker(tmp_path, "vgg")
    save_attacker(tmp_path, "linear", torch.nn.ModuleDict({"Male": build_model(LINEAR)}),
                  {"kind": "attribute", "attributes": {"Male": LINEAR}})
    (tmp_path / "fitted" / "linear.json").write_text("{")
    with pytest.raises(RunError, match="linear.json: not valid JSON"):
        load_attacker(tmp_path, "linear")
    (tmp_path / "fitted" / "linear.json").write_text('{"kind": "attribute"}')
    with pytest.raises(RunError, match="cannot rebuild"):
        load_attacker(tmp_path, "linear")
    with pytest.raises(ValueError, match="file name"):
        save_attacker(tmp_path, "../x", build_model(LINEAR), {"kind": "attribute", "attributes": {}})


def _attack_json(run: Path, work: Path, settings: dict) -> None:
    (work / "urec1.json").write_text(json.dumps({"settings": settings}))
    (run / "attack.json").write_text(json.dumps({
        "split": "test", "eval_images": 10, "work_dir": str(Path("/elsewhere/attack") / work.name),
        "reconstruction": {"best_attacker": "inversion", "per_attacker": {
            "urec1": {"ms_ssim": 0.5, "n": 10}, "inversion": {"ms_ssim": 0.6, "n": 2}}},
        "privacy": {"Male": {"per_attacker": {"linear": {"balanced_accuracy": 0.6, "majority_rate": 0.55},
                                              "oracle": {"balanced_accuracy": 0.7, "floor": True}}}},
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
    assert sorted(found.unsaved) == ["inversion", "linear"] and found.attributes == {"Male": []}
    save_attacker(work, "linear", torch.nn.ModuleDict({"Male": build_model(LINEAR)}), {"kind": "attribute"})
    unreadable = load_attackers(run)  # e.g. written by another version: listed, not fatal
    assert "linear" in unreadable.unsaved and "cannot rebuild" in unreadable.problems[0]
    assert [a.attacker for a in unreadable.reconstructors] == ["urec1"]
    _attack_json(run, work, {"epochs": 5})  # the stored result was refitted with other settings since
    stale = load_attackers(run)
    assert not stale and "urec1" in stale.unsaved
