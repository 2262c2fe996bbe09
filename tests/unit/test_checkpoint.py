"""Checkpoints: atomic, loadable with weights_only=True, and a killed run resumes to the same weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deepobfuscator.config import RunConfig
from deepobfuscator.runs import RunDir
from deepobfuscator.methods import train_run
from deepobfuscator.training import StopTraining, build_modules, make_trainer
from deepobfuscator.training.checkpoint import (
    latest_checkpoint, load_checkpoint, load_modules, save_checkpoint, save_modules,
)


def kill_at(step: int):
    """An ``on_step`` hook that 'kills' training right after global step ``step``."""
    def hook(trainer, pos) -> None:
        if pos.global_step == step:
            raise StopTraining(f"killed at {step}")
    return hook


def _metrics(run: Path) -> list[dict]:
    drop = ("seconds", "seconds_per_batch")
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, celeba_root: Path) -> Path:
    """One uninterrupted tiny run (12 steps: 4 per stage; checkpoints every 2 steps)."""
    from deepobfuscator.config import preset

    cfg = preset("tiny")
    cfg.data.root = str(celeba_root)
    out = tmp_path_factory.mktemp("ref") / "run"
    train_run(cfg, out, progress=False)
    return out


def test_killed_run_leaves_valid_checkpoint_and_resumes_exactly(tiny_cfg: RunConfig, tmp_path: Path,
                                                                 reference: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(StopTraining):  # killed mid-epoch of the attacker stage
        train_run(tiny_cfg, out, progress=False, on_step=kill_at(7))
    run = RunDir(out)
    assert not run.is_complete()
    ckpt = latest_checkpoint(run.checkpoints)
    assert ckpt is not None and ckpt.name == "step-00000006"
    state = json.loads((ckpt / "state.json").read_text())
    assert state == {"stage": 1, "epoch": 0, "step": 2, "global_step": 6, "metrics_lines": 1}
    # the checkpoint stands on its own: strict weights, weights_only optimiser state, nothing partial
    fresh = build_modules(tiny_cfg, *_specs(run))
    load_modules(dict(fresh.items()), ckpt / "modules.safetensors")
    extra = torch.load(ckpt / "optim.pt", weights_only=True)
    assert set(extra["optimizers"]) == {"obfuscator", "classifier", "reconstructor", "adversary"}
    assert [p.name for p in run.checkpoints.iterdir() if p.is_dir()] == ["step-00000006"]

    # second kill mid-cycle of the adversarial stage (phase 3 next), then run to the end
    with pytest.raises(StopTraining):
        train_run(tiny_cfg, out, resume=True, progress=False, on_step=kill_at(11))
    assert latest_checkpoint(run.checkpoints).name == "step-00000010"
    train_run(tiny_cfg, out, resume=True, progress=False)
    assert run.is_complete()

    ref, got = load_file(str(reference / "checkpoints" / "final.safetensors")), load_file(str(run.final))
    assert ref.keys() == got.keys()
    worst = max(float((ref[k].double() - got[k].double()).abs().max()) for k in ref)
    assert worst <= 1e-6, f"resumed weights differ from the uninterrupted run by {worst}"
    assert _metrics(out) == _metrics(reference)  # no duplicated or lost records


def test_resume_of_finished_run_is_a_noop(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train_run(tiny_cfg, out, progress=False)
    final = (out / "checkpoints" / "final.safetensors").read_bytes()
    lines = (out / "metrics.jsonl").read_text()
    again = train_run(tiny_cfg, out, resume=True, progress=False)
    assert again["test"] == first["test"]
    assert (out / "checkpoints" / "final.safetensors").read_bytes() == final
    assert (out / "metrics.jsonl").read_text() == lines


def test_resume_before_any_checkpoint_starts_over(tiny_cfg: RunConfig, tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(StopTraining):
        train_run(tiny_cfg, out, progress=False, on_step=kill_at(1))
    assert latest_checkpoint(RunDir(out).checkpoints) is None
    train_run(tiny_cfg, out, resume=True, progress=False)
    ref = load_file(str(reference / "checkpoints" / "final.safetensors"))
    got = load_file(str(out / "checkpoints" / "final.safetensors"))
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_interrupted_checkpoint_write_keeps_previous(tiny_cfg: RunConfig, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer(tiny_cfg, tmp_path / "run", progress=False)
    modules = dict(trainer.modules.items())
    ckpt_dir = trainer.run.checkpoints
    first = save_checkpoint(ckpt_dir, modules, trainer.optimizers, {**trainer.position.as_dict(), "global_step": 2})
    before = {k: v.clone() for k, v in load_file(str(first / "modules.safetensors")).items()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    with torch.no_grad():
        for p in trainer.modules.obfuscator.parameters():
            p.add_(1.0)
    monkeypatch.setattr("deepobfuscator.training.checkpoint.atomic_write_json", crash)
    with pytest.raises(OSError):
        save_checkpoint(ckpt_dir, modules, trainer.optimizers, {**trainer.position.as_dict(), "global_step": 4})
    monkeypatch.undo()
    assert latest_checkpoint(ckpt_dir) == first
    state = load_checkpoint(first, modules, trainer.optimizers)
    assert state["global_step"] == 2
    for key, value in before.items():
        module, name = key.split(".", 1)
        assert torch.equal(getattr(trainer.modules, module).state_dict()[name], value)


def test_save_and_load_modules_roundtrip(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    from deepobfuscator.data.index import AttributeSpec

    specs = [AttributeSpec("Smiling")], [AttributeSpec("Male")]
    a, b = build_modules(tiny_cfg, *specs, seed=0), build_modules(tiny_cfg, *specs, seed=1)
    save_modules(dict(a.items()), tmp_path / "m.safetensors", metadata={"run": "x"})
    load_modules(dict(b.items()), tmp_path / "m.safetensors")
    for (_, ma), (_, mb) in zip(a.items(), b.items()):
        for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    with pytest.raises(KeyError, match="no weights for module 'extra'"):
        load_modules({"extra": a.obfuscator}, tmp_path / "m.safetensors")
    with pytest.raises(FileNotFoundError):
        load_modules(dict(a.items()), tmp_path / "none.safetensors")


def _specs(run: RunDir):
    from deepobfuscator.runs import run_specs

    return run_specs(run.read_config())
