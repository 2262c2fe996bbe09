"""Algorithm 1: each phase updates exactly its modules; seeded runs are reproducible."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors.torch import load_file

from deepobfuscator.config import RunConfig
from deepobfuscator.methods import train_run
from deepobfuscator.training import MODULE_NAMES, Trainer, make_trainer

State = dict[str, dict[str, dict[str, torch.Tensor]]]


def snapshot(trainer: Trainer) -> State:
    """Copies of every module's parameters and buffers."""
    return {
        name: {"params": {k: v.detach().clone() for k, v in m.named_parameters()},
               "buffers": {k: v.detach().clone() for k, v in m.named_buffers()}}
        for name, m in trainer.modules.items()
    }


def changed(before: State, after: State, module: str, kind: str) -> dict[str, bool]:
    """Which tensors of ``module`` differ between two snapshots."""
    return {k: not torch.equal(v, after[module][kind][k]) for k, v in before[module][kind].items()}


@pytest.fixture
def trainer(tiny_cfg: RunConfig, tmp_path: Path) -> Trainer:
    """A fresh trainer on the tiny run, with one training batch at hand."""
    tiny_cfg.train.seed = 3
    t = make_trainer(tiny_cfg, tmp_path / "run", progress=False)
    t.batch = next(t.data.loader("train", 16, shuffle=True, seed=1).epoch(0))
    return t


PHASES: dict[str, tuple[Callable[[Trainer, Any], dict], set[str]]] = {
    "defend_reconstruction": (lambda t, b: t.step_defend_reconstruction(b), {"obfuscator"}),
    "defend_attributes": (lambda t, b: t.step_defend_attributes(b), {"obfuscator"}),
    "attackers": (lambda t, b: t.step_attackers(b), {"reconstructor", "adversary"}),
    "classifier": (lambda t, b: t.step_classifier(b), {"classifier"}),
    "pretrain": (lambda t, b: t.step_pretrain(b, 0), {"obfuscator", "classifier"}),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_phase_updates_exactly_its_modules(trainer: Trainer, phase: str) -> None:
    step, updated = PHASES[phase]
    # earlier steps leave gradients behind; clear them so this step's backward is what we see
    for _, module in trainer.modules.items():
        for p in module.parameters():
            p.grad = None
    before = snapshot(trainer)
    losses = step(trainer, trainer.batch)
    after = snapshot(trainer)
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for name in MODULE_NAMES:
        params = changed(before, after, name, "params")
        buffers = changed(before, after, name, "buffers")
        module = getattr(trainer.modules, name)
        if name in updated:
            assert all(params.values()), f"{phase}: {name} parameters not all updated: {params}"
            running = {k: v for k, v in buffers.items() if k.endswith(("running_mean", "running_var"))}
            assert running and all(running.values()), f"{phase}: {name} BN statistics not updated"
            assert all(p.grad is not None for p in module.parameters())
        else:
            assert not any(params.values()), f"{phase}: frozen {name} changed: {[k for k, v in params.items() if v]}"
            assert not any(buffers.values()), f"{phase}: frozen {name} BN buffers changed"
            grads = [k for k, p in module.named_parameters() if p.grad is not None]
            assert not grads, f"{phase}: gradients computed for frozen {name}: {grads[:3]}"


def test_defence_phases_move_obfuscator_against_attackers(trainer: Trainer) -> None:
    """Phase 0 and 1 objectives have the signs of Eqs. 6 and 8 (checked on the loss they step)."""
    batch = trainer.batch
    trainer.cfg.privacy.lambda1 = trainer.cfg.privacy.lambda2 = 100.0  # the privacy terms dominate L(C)
    out = trainer.step_defend_reconstruction(batch)
    assert set(out) == {"L_C", "L_AR1", "L_AR2"}
    # repeated steps on one batch: AR's output moves away from the image and towards the noise
    first = out["L_AR2"] - out["L_AR1"]
    for _ in range(4):
        out = trainer.step_defend_reconstruction(batch)
    assert out["L_AR2"] - out["L_AR1"] < first
    for _ in range(30):  # an adversary that reads the features, so O's steps can change its loss
        trainer.step_attackers(batch)
    ac = [trainer.step_defend_attributes(batch)["L_AC"] for _ in range(5)]
    assert ac[-1] > ac[0]  # the obfuscator is pushed to raise the adversary's loss


@pytest.mark.parametrize("defend,expected", [("both", [0, 1, 2, 3, 0, 1]), ("reconstruction", [0, 2, 3, 0, 2, 3]),
                                             ("attributes", [1, 2, 3, 1, 2, 3]), ("none", [2, 3, 2, 3, 2, 3])])
def test_cycle_order_per_defence(tiny_cfg: RunConfig, tmp_path: Path, defend: str, expected: list[int]) -> None:
    tiny_cfg.privacy.defend = defend
    t = make_trainer(tiny_cfg, tmp_path / "run", progress=False)
    batches = list(t.data.loader("train", 8).epoch(0))
    assert [t.step_cycle(batches[i % len(batches)], i)["phase"] for i in range(6)] == expected


def _final_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "final.safetensors"))


def _metrics(run: Path) -> list[dict[str, Any]]:
    import json

    drop = ("seconds", "seconds_per_batch")
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_seeded_run_is_reproducible(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    a = train_run(tiny_cfg, tmp_path / "a", progress=False)
    b = train_run(tiny_cfg, tmp_path / "b", progress=False)
    ta, tb = _final_tensors(tmp_path / "a"), _final_tensors(tmp_path / "b")
    assert ta.keys() == tb.keys() and len(ta) > 50
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert a["test"] == b["test"]
    ma = _metrics(tmp_path / "a")
    assert ma == _metrics(tmp_path / "b")
    assert [(m["stage"], m["epoch"]) for m in ma] == [("pretrain", 1), ("attacker", 1), ("adversarial", 1)]
    # another seed gives other weights
    tiny_cfg.train.seed = 1
    train_run(tiny_cfg, tmp_path / "c", progress=False)
    tc = _final_tensors(tmp_path / "c")
    assert not torch.equal(ta["obfuscator.features.0.0.weight"], tc["obfuscator.features.0.0.weight"])


def test_summary_reports_test_split_and_majority(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    summary = train_run(tiny_cfg, tmp_path / "run", progress=False)
    assert summary["test_images"] == len(summary_split(tmp_path / "run")["test"])
    assert set(summary["test"]) == {"C_acc", "AC_acc", "AR_msssim"}
    assert 0.0 <= summary["test"]["C_acc"]["Smiling"] <= 1.0 and 0.0 < summary["test"]["AR_msssim"] < 1.0
    assert 0.5 <= summary["majority_rate"]["Male"] <= 1.0
    assert set(summary["seconds_per_epoch"]) == {"pretrain", "attacker", "adversarial"}


def summary_split(run: Path) -> dict[str, list[int]]:
    """The run's split.json."""
    import json

    return json.loads((run / "split.json").read_text())


def test_a_step_decay_lowers_o_and_c_rates_in_the_last_stage_1_epochs(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    from deepobfuscator.methods import method_trainer
    tiny_cfg.method = "encoder"
    tiny_cfg.train.epochs_pretrain, tiny_cfg.train.epochs_adversarial = 3, 0
    tiny_cfg.train.lr_drop_epochs, tiny_cfg.train.lr_drop_factor = 1, 0.1
    rates: dict[int, set[float]] = {}

    def seen(trainer: Trainer, pos: Any) -> None:
        if pos.stage == 0:
            rates.setdefault(pos.epoch, set()).update(g["lr"] for n in ("obfuscator", "classifier")
                                                      for g in trainer.optimizers[n].param_groups)
    trainer = method_trainer(tiny_cfg, tmp_path / "enc", progress=False, on_step=seen)
    trainer.fit()
    lr = tiny_cfg.train.lr
    assert sorted(rates) == [0, 1, 2] and rates[0] == rates[1] == {lr}
    assert len(rates[2]) == 1 and rates[2].pop() == pytest.approx(lr * 0.1)
    attacker_rate = trainer.optimizers["reconstructor"].param_groups[0]["lr"]
    assert attacker_rate == tiny_cfg.train.lr_attacker  # the attackers keep theirs
    tiny_cfg.train.lr_drop_factor = 0.0
    with pytest.raises(ValueError, match="lr_drop_factor"):
        method_trainer(tiny_cfg, tmp_path / "bad", progress=False).fit()
