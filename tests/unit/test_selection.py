"""The Encoder deploys stage 1's best validation epoch: the rule, the restored weights, the record, resume."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from deepobfuscator.config import preset
from deepobfuscator.experiments.cache import stage_key
from deepobfuscator.methods import configure, get_method, method_trainer, train_run
from deepobfuscator.training import StopTraining, Trainer
from deepobfuscator.training.checkpoint import load_modules
from deepobfuscator.training.selection import VAL_BEST, ValidationChoiceTrainer, best_epoch, validation_utility
from deepobfuscator.training.start import format_summary


def _rec(epoch: int, *accs: float, stage: str = "pretrain") -> dict[str, Any]:
    return {"stage": stage, "epoch": epoch, "split": "val", "C_acc": {f"a{i}": a for i, a in enumerate(accs)}}


def test_the_rule_is_the_best_mean_validation_accuracy_and_the_earlier_epoch_on_ties() -> None:
    records = [_rec(1, 0.6, 0.7), _rec(2, 0.9, 0.6), _rec(3, 0.8, 0.7), _rec(4, 0.7, 0.8), _rec(1, 0.99, stage="attacker")]
    assert validation_utility(records[1]) == pytest.approx(0.75)
    assert best_epoch(records)["epoch"] == 2  # 0.75 at epochs 2, 3 and 4 (up to rounding): the earlier; attacker ignored
    assert best_epoch([_rec(1, 0.5), _rec(2, 0.51)])["epoch"] == 2
    assert best_epoch([_rec(1, 0.5, stage="attacker")]) is None


def _scripted(monkeypatch: pytest.MonkeyPatch, script: list[float], snapshots: dict[int, torch.Tensor]) -> None:
    """Stage-1 validation reads ``script`` per epoch and remembers O's weights at each epoch."""
    real = Trainer.validate

    def validate(self: Trainer, stage: int, split: str = "val") -> dict[str, Any]:
        out = real(self, stage, split)
        if stage == 0 and split == "val":
            epoch = self.position.epoch + 1
            snapshots[epoch] = torch.cat([p.detach().flatten().clone() for p in self.modules.obfuscator.parameters()])
            out["C_acc"] = {name: script[epoch - 1] for name in out["C_acc"]}
        return out

    monkeypatch.setattr(Trainer, "validate", validate)


def _weights(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_the_encoder_deploys_its_best_validation_epoch(tiny_cfg, tmp_path, monkeypatch) -> None:
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 3, 0
    snapshots: dict[int, torch.Tensor] = {}
    _scripted(monkeypatch, [0.6, 0.8, 0.7], snapshots)  # epoch 2 validates best, the last epoch falls
    trainer = method_trainer(configure(tiny_cfg, "encoder"), tmp_path / "enc", progress=False)
    assert isinstance(trainer, ValidationChoiceTrainer) and trainer.cfg.params == {"deploy": "best_val"}
    trainer.fit()
    assert not torch.equal(snapshots[2], snapshots[3])
    assert torch.equal(_weights(trainer.modules.obfuscator), snapshots[2])  # O after training: epoch 2's
    final = configure(preset("tiny"), "encoder")
    deployed = method_trainer(final, tmp_path / "other", progress=False).modules
    load_modules({"obfuscator": deployed.obfuscator}, trainer.run.final)
    assert torch.equal(_weights(deployed.obfuscator), snapshots[2])  # and in the final weights
    records = trainer.run.read_metrics()
    last = [r for r in records if r["stage"] == "pretrain"][-1]
    assert last["deployed"]["epoch"] == 2 and last["deployed"]["val_utility"] == pytest.approx(0.8)
    assert "deploying epoch 2" in trainer.format_record(last)
    monkeypatch.undo()
    summary = train_run(trainer.cfg, tmp_path / "enc", resume=True, progress=False)
    assert summary["deployed"]["epoch"] == 2 and summary["deployed"]["of"] == 3
    assert "epoch 2 of 3" in format_summary(summary, tmp_path / "enc")


def test_deploy_last_keeps_the_last_epoch(tiny_cfg, tmp_path, monkeypatch) -> None:
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 2, 0
    tiny_cfg.params = {"deploy": "last"}
    snapshots: dict[int, torch.Tensor] = {}
    _scripted(monkeypatch, [0.9, 0.6], snapshots)
    trainer = method_trainer(configure(tiny_cfg, "encoder"), tmp_path / "enc", progress=False)
    trainer.fit()
    assert torch.equal(_weights(trainer.modules.obfuscator), snapshots[2])
    assert not (trainer.run.checkpoints / VAL_BEST).exists()
    assert all("deployed" not in r for r in trainer.run.read_metrics())


def test_a_run_killed_after_its_best_epoch_resumes_to_the_same_choice(tiny_cfg, tmp_path, monkeypatch) -> None:
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 3, 0
    snapshots: dict[int, torch.Tensor] = {}
    _scripted(monkeypatch, [0.9, 0.6, 0.7], snapshots)
    cfg = configure(tiny_cfg, "encoder")

    def kill(trainer: Trainer, pos: Any) -> None:
        if pos.stage == 0 and pos.epoch == 2 and pos.step == 1:
            raise StopTraining

    with pytest.raises(StopTraining):
        method_trainer(cfg, tmp_path / "enc", progress=False, on_step=kill).fit()
    trainer = method_trainer(cfg, tmp_path / "enc", resume=True, progress=False)
    trainer.fit()
    assert torch.equal(_weights(trainer.modules.obfuscator), snapshots[1])
    assert [r["deployed"]["epoch"] for r in trainer.run.read_metrics() if "deployed" in r] == [1]


def test_choosing_by_validation_keeps_the_encoder_out_of_the_plain_pretrain_cache() -> None:
    flat = preset("tiny")
    flat.train.epochs_adversarial = 0
    cls = get_method("encoder").trainer_cls
    plain = stage_key(configure(flat, "deepobfuscator"), 0)
    assert stage_key(configure(flat, "encoder"), 0, cls) != plain
    flat.params = {"deploy": "last"}
    assert stage_key(configure(flat, "encoder"), 0, cls) == plain
