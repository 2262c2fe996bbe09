"""`deepobf train --set method=NAME` trains every registered method with its own trainer and transforms,
and `deepobf attack`'s feature extraction sees exactly the features that training used."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepobfuscator.attacks.features import obfuscate
from deepobfuscator.cli import main
from deepobfuscator.methods import METHODS, load_trained
from deepobfuscator.runs import RunDir
from deepobfuscator.training import Trainer


@pytest.mark.parametrize("name", METHODS.names())
def test_train_command_trains_the_method_that_attack_evaluates(name: str, tmp_path: Path, celeba_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Trainer] = []
    original = Trainer.fit

    def spy(self: Trainer):
        seen.append(self)
        return original(self)

    monkeypatch.setattr(Trainer, "fit", spy)
    out = tmp_path / name
    assert main(["train", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--no-progress",
                 "--set", f"method={name}"]) == 0
    method = METHODS.get(name)
    trainer = seen[-1]
    assert isinstance(trainer, method.trainer_cls), f"{name} was trained by {type(trainer).__name__}"
    cfg, modules = load_trained(RunDir(out))  # what deepobf attack loads, then obfuscate()s
    assert cfg.method == name and set(method.defaults) <= set(cfg.params)
    probe = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.manual_seed(0)  # noise transforms draw fresh noise: same draws on both sides
        trained = trainer.encode(probe)
        torch.manual_seed(0)
        attacked = obfuscate(cfg, modules, probe)
    # the same function: training may run the convolutions NHWC (train.channels_last, auto on a CPU), which rounds
    # in another order than the attack's NCHW modules
    assert cfg.train.channels_last in (True, False)  # recorded resolved
    assert torch.allclose(trained, attacked, rtol=1e-4, atol=1e-5)
    if method.input_transform is not None:  # the noise is really applied, not skipped on both sides
        with torch.no_grad():
            assert not torch.equal(attacked, modules.obfuscator(probe))
