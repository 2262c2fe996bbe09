"""`deepobf baseline NAME` on real CelebA (tiny): runs that `deepobf attack` evaluates like any other."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from deepobfuscator.cli import main

TINY_ATTACK = ["--attackers", "mirror,linear", "--epochs", "1", "--reid-images", "4", "--grid-images", "2",
               "--bootstrap", "20", "--no-progress", "--threads", "1"]


def _baseline(name: str, out: Path, celeba_root: Path, *extra: str) -> int:
    return main(["baseline", name, "--preset", "tiny", "--data", str(celeba_root), "--out", str(out),
                 "--no-progress", *extra])


def test_dp_baseline_records_its_parameters_and_is_attackable(tmp_path: Path, celeba_root: Path, capsys) -> None:
    out = tmp_path / "dp"
    assert _baseline("dp", out, celeba_root, "--epsilon", "0.2") == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method"] == {"name": "dp", "epsilon": 0.2, "sensitivity": 1.0, "clip": False}
    assert cfg["train"]["epochs_adversarial"] == 0 and (out / "checkpoints" / "final.safetensors").is_file()
    assert main(["attack", str(out), *TINY_ATTACK]) == 0
    result = json.loads((out / "attack.json").read_text())
    assert result["method"] == "dp" and "Male" in result["privacy"] and "Smiling" in result["utility"]
    assert (out / "recon_grid.png").is_file()
    # a resume that would change epsilon is refused, naming both values
    assert _baseline("dp", out, celeba_root, "--epsilon", "0.5", "--resume") == 2
    assert "method.epsilon (recorded 0.2, given 0.5)" in capsys.readouterr().err
    assert _baseline("dp", out, celeba_root, "--epsilon", "0.2", "--resume") == 0


def test_hybrid_baseline_ships_its_pca_to_the_attacks(tmp_path: Path, celeba_root: Path) -> None:
    from deepobfuscator.attacks.features import obfuscate
    from deepobfuscator.methods.hybrid import PCALaplace
    from deepobfuscator.methods import load_trained
    from deepobfuscator.runs import RunDir

    out = tmp_path / "hybrid"
    assert _baseline("hybrid", out, celeba_root, "--set", "method.n_components=8") == 0
    assert (out / "hybrid_pca.safetensors").is_file()
    cfg, modules = load_trained(RunDir(out))
    assert isinstance(modules.feature_transform, PCALaplace) and modules.feature_transform.components.shape[0] == 8
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        plain, sent = modules.obfuscator(images), obfuscate(cfg, modules, images)
    assert sent.shape == plain.shape and not torch.allclose(sent, plain)
    # what is sent lies in the 8-dimensional PCA subspace (plus the mean)
    centred = sent.flatten(1) - modules.feature_transform.mean
    rebuilt = (centred @ modules.feature_transform.components.T) @ modules.feature_transform.components
    assert torch.allclose(rebuilt, centred, atol=1e-3)


def test_pretrain_cache_reuses_stages_without_changing_results(tmp_path: Path, celeba_root: Path) -> None:
    cache = str(tmp_path / "cache")
    assert _baseline("deepobfuscator", tmp_path / "l10", celeba_root, "--pretrain-cache", cache,
                     "--set", "privacy.lambda1=10") == 0
    assert _baseline("deepobfuscator", tmp_path / "cached", celeba_root, "--pretrain-cache", cache) == 0
    assert _baseline("deepobfuscator", tmp_path / "fresh", celeba_root) == 0
    info = json.loads((tmp_path / "cached" / "pretrain_cache.json").read_text())
    assert info["restored_stage"] == 1 and info["source_run"].endswith("l10")
    a = load_file(str(tmp_path / "cached" / "checkpoints" / "final.safetensors"))
    b = load_file(str(tmp_path / "fresh" / "checkpoints" / "final.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_baseline_without_name_lists_methods_and_rejects_unknown(capsys) -> None:
    assert main(["baseline"]) == 0
    listed = capsys.readouterr().out
    for name in ("encoder", "noisy", "dp", "hybrid", "pan", "nopeek"):
        assert name in listed
    with pytest.raises(SystemExit):
        main(["baseline", "nosuch"])
