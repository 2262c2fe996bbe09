"""The judge's precision (``deepobf attack --amp``): bf16 autocast of the learned attackers' forwards with float32
weights and losses, validated, resolved where the attack starts, recorded, and part of every stored record's
settings so a judge in another precision retrains instead of reusing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from deepobfuscator.attacks import AttackSettings, run_attack
from deepobfuscator.attacks.base import precision_settings
from deepobfuscator.training import precision
from deepobfuscator.training.precision import set_precision

QUICK = dict(recon_epochs=1, attr_epochs=1, batch_size=16, inversion_images=3, inversion_steps=3, reid_images=8,
             grid_images=4, bootstrap=10, constant_steps=3, mlp_hidden=16)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))


def test_bf16_forward_returns_float32_near_float32_and_keeps_the_weights():
    reference, model = _model(), _model()
    x = torch.randn(4, 3, 6, 6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    set_precision(model, "bf16")
    out = model(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, reference(x), atol=0.05, rtol=0.05)
    assert not torch.equal(out, reference(x))  # it did run in bf16
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in model.state_dict().items())
    plain = _model()
    set_precision(plain, "none")  # float32 leaves the module untouched
    assert "forward" not in vars(plain) and torch.equal(plain(x), reference(x))


def test_the_precision_setting_is_validated_and_recorded_only_when_not_float32():
    with pytest.raises(ValueError, match="amp must be one of"):
        AttackSettings(amp="fp16").validate()
    assert AttackSettings().amp == "auto"  # resolved where the attack starts
    assert precision_settings(AttackSettings(amp="none")) == {}  # records from before the setting match float32
    assert precision_settings(AttackSettings(amp="bf16")) == {"amp": "bf16"}


def test_a_judge_in_another_precision_retrains_and_says_so(run_copy: Path, monkeypatch, fitted_attackers: list[str]):
    trained = fitted_attackers
    out = run_copy / "precision.json"

    def judge(amp: str) -> dict:
        trained.clear()
        return run_attack(run_copy, AttackSettings(**QUICK, attackers=["mirror", "mlp"], amp=amp), out=out,
                          retrain=False, progress=False)

    judge("none")
    result = judge("bf16")
    assert sorted(trained) == ["attack mirror", "attack mlp Male"]  # float32 records are not reused in bf16
    assert result["settings"]["amp"] == "bf16" and "bf16" in out.with_suffix(".md").read_text()
    stored = json.loads(next((run_copy / "attack").glob("*/mirror.s0.json")).read_text())
    assert stored["settings"]["amp"] == "bf16"
    saved = json.loads(next((run_copy / "attack").glob("*/fitted/mirror.s0.json")).read_text())
    assert saved["amp"] == "bf16"  # `deepobf inspect` and warm starts load it to run as it was scored
    judge("bf16")
    assert trained == []  # the same precision resumes
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert judge("auto")["settings"]["amp"] == "none"  # auto resolves where the attack starts; recorded as run
    assert sorted(trained) == ["attack mirror", "attack mlp Male"]
