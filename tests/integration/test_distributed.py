"""Data-parallel training: 2 gloo ranks on CPU match one process on the same global batches."""
from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from deepobfuscator.config import RunConfig
from deepobfuscator.training import StopTraining, Trainer, make_trainer, summarize
from deepobfuscator.training.distributed import DistributedSync, command_scope, shutdown

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")
WORLD = 2
STOP_AT = 6  # global step at which the first distributed attempt is "killed"


class RecordingTrainer(Trainer):
    """Records, after every step, the batch it saw, the cycle phase and a checksum of every module."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.records: list[dict[str, Any]] = []

    def stage_step(self, stage: int) -> Callable:
        fn = super().stage_step(stage)

        def step(batch: Any, i: int) -> dict[str, Any]:
            out = fn(batch, i)
            sums = [torch.cat([p.detach().double().flatten() for p in m.parameters()]) for _, m in self.modules.items()]
            self.records.append({"stage": stage, "step": i, "global_step": self.position.global_step,
                                 "index": batch.index.tolist(), "phase": out.get("phase"),
                                 "checksum": [(float(s.sum()), float(s.square().sum())) for s in sums]})
            return out

        return step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_check(sync: DistributedSync) -> dict[str, Any]:
    """Rank-dependent data through Conv+BN: gradients and running stats must agree after sync."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(sync.rank + 10))
    net(x).square().mean().backward()
    sync.attach(type("M", (), {"items": lambda self: [("net", net)]})())
    sync(net.parameters())
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    stats = torch.cat([net[1].running_mean, net[1].running_var])
    return {"grads": grads, "stats": stats}


def _worker(rank: int, port: int, cfg: dict, out: str, rec_dir: str, resume: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)

    def stop(trainer: Trainer, pos: Any) -> None:
        if not resume and pos.global_step == STOP_AT:
            raise StopTraining

    try:
        trainer = make_trainer(RunConfig.from_dict(cfg), Path(out), resume=resume, progress=False, on_step=stop,
                               trainer_cls=RecordingTrainer)
        result: dict[str, Any] = {"start": trainer.position.global_step}
        try:
            trainer.fit()
        except StopTraining:
            pass
        else:
            result["summary"] = summarize(trainer)
        result["records"] = trainer.records
        if not resume:
            result["bn"] = _bn_check(trainer.sync)
        torch.save(result, Path(rec_dir) / f"rank{rank}-{'resume' if resume else 'first'}.pt")
    finally:
        shutdown()


def _spawn(cfg: RunConfig, out: Path, rec_dir: Path, resume: bool) -> list[dict[str, Any]]:
    mp.spawn(_worker, args=(_free_port(), cfg.to_dict(), str(out), str(rec_dir), resume), nprocs=WORLD, join=True)
    tag = "resume" if resume else "first"
    return [torch.load(rec_dir / f"rank{r}-{tag}.pt", weights_only=True) for r in range(WORLD)]


def test_two_gloo_ranks_match_single_process(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    cfg = tiny_cfg
    cfg.model.batch_norm = False  # per-rank BatchNorm statistics differ from the global batch's on CPU
    cfg.model.dropout = 0.0  # per-rank dropout streams differ from the single-process one
    ref = make_trainer(RunConfig.from_dict(cfg.to_dict()), tmp_path / "single", progress=False, trainer_cls=RecordingTrainer)
    ref.fit()
    ref_summary = summarize(ref)
    ref_by_step = {r["global_step"]: r for r in ref.records}

    rec_dir = tmp_path / "records"
    rec_dir.mkdir()
    out = tmp_path / "dist"
    first = _spawn(cfg, out, rec_dir, resume=False)  # "killed" at STOP_AT, after a checkpoint at STOP_AT - 2
    second = _spawn(cfg, out, rec_dir, resume=True)
    assert second[0]["start"] == second[1]["start"] and 0 < second[0]["start"] < STOP_AT

    for part in (first, second):
        assert len(part[0]["records"]) == len(part[1]["records"]) > 0
        for r0, r1 in zip(part[0]["records"], part[1]["records"]):
            assert (r0["stage"], r0["step"], r0["phase"]) == (r1["stage"], r1["step"], r1["phase"])  # same phase
            assert not set(r0["index"]) & set(r1["index"])  # disjoint shards
            ref_rec = ref_by_step[r0["global_step"]]
            assert sorted(r0["index"] + r1["index"]) == sorted(ref_rec["index"])  # same global batch
            assert r0["phase"] == ref_rec["phase"]
            assert r0["checksum"] == r1["checksum"]  # identical parameters on both ranks after every phase
            np.testing.assert_allclose(r0["checksum"], ref_rec["checksum"], rtol=1e-4, atol=1e-4)
    phases = {r["phase"] for r in second[0]["records"] if r["stage"] == 2}
    assert phases == {0, 1, 2, 3}

    # resumed distributed run ends where the single-process run ends
    single, multi = load_file(str(ref.run.final)), load_file(str(out / "checkpoints" / "final.safetensors"))
    assert single.keys() == multi.keys()
    for key in single:
        torch.testing.assert_close(multi[key], single[key], rtol=1e-3, atol=2e-5)
    s0, s1 = second[0]["summary"]["test"], second[1]["summary"]["test"]
    assert s0 == s1  # metrics reduced over ranks
    n = ref_summary["test_images"]
    for name, acc in ref_summary["test"]["C_acc"].items():
        assert abs(s0["C_acc"][name] - acc) <= 1.0 / n + 1e-9
    assert s0["AR_msssim"] == pytest.approx(ref_summary["test"]["AR_msssim"], abs=1e-3)

    # only rank 0 logged: one record per epoch, no duplicates after the resume
    metrics = [line for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(metrics) == len((ref.run.metrics).read_text().splitlines()) == 3

    # BatchNorm path: gradients and running statistics agree across ranks after DistributedSync
    a, b = first[0]["bn"], first[1]["bn"]
    assert torch.equal(a["grads"], b["grads"]) and torch.equal(a["stats"], b["stats"])


def test_command_scope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with command_scope("report") as active:  # not data-parallel: rank 1 sits it out
        assert not active
    monkeypatch.setenv("RANK", "0")
    with command_scope("report") as active:  # ... and rank 0 runs it single-process
        assert active and "WORLD_SIZE" not in os.environ
    assert os.environ["WORLD_SIZE"] == "2"


def test_torchrun_cli_train_bf16_channels_last(celeba_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "deepobfuscator.cli", "train", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out),
           "--device", "auto", "--no-progress", "--set", "train.amp=bf16", "--set", "train.channels_last=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Run directory:") == 1  # only rank 0 prints
    assert (out / "checkpoints" / "final.safetensors").is_file() and (out / "train_summary.json").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_bf16_autocast_and_channels_last(tiny_cfg: RunConfig) -> None:
    from deepobfuscator.data import AttributeSpec
    from deepobfuscator.losses import attribute_loss
    from deepobfuscator.training import build_modules
    from deepobfuscator.training.precision import apply_precision

    specs = [AttributeSpec("Smiling", 2)]
    modules = build_modules(tiny_cfg, specs, [AttributeSpec("Male", 2)])
    apply_precision(modules, "bf16", channels_last=True, device="cpu")
    seen: list[torch.dtype] = []
    conv = next(m for m in modules.obfuscator.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    feats = modules.obfuscator(torch.rand(2, 3, 32, 32))
    assert seen == [torch.bfloat16] and feats.dtype == torch.float32
    loss = attribute_loss(modules.classifier(feats), torch.zeros(2, 1, dtype=torch.long), specs)
    assert loss.dtype == torch.float32
    loss.backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    clone = copy.deepcopy(modules.obfuscator)  # the wrapped forward follows the copy
    assert clone.forward.__self__ is clone
