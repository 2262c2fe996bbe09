"""Data-parallel training across processes (``torchrun``).

Under ``torchrun`` every rank builds the same modules, reads its shard of every global batch
(:class:`~deepobfuscator.data.BatchLoader` cuts batch ``b`` as ``chunk[rank::world]``) and, before
each optimiser step, :class:`DistributedSync` all-reduces and averages the gradients of the module
being stepped. That is exactly what ``DistributedDataParallel`` does, done explicitly because
Algorithm 1 changes which modules require gradients on every batch of the four-batch cycle, which
DDP's reducer (built once, from the parameters requiring gradients at wrap time) cannot follow.
Only rank 0 writes checkpoints, metrics and reports; resuming reads the same checkpoint format as
a single-process run.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..config import RunConfig
from ..runs import RunDir
from ..utils import resolve_device
from .modules import Modules
from .staged import GradSync
from .trainer import Trainer

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
DEFAULT_BUCKET_BYTES = 32 << 20
# Commands that run data-parallel under torchrun; any other command runs on rank 0 only.
DISTRIBUTED_COMMANDS: set[str] = {"train"}


def env_world() -> int:
    """``WORLD_SIZE`` set by torchrun (1 outside it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """``RANK`` set by torchrun (0 outside it)."""
    return int(os.environ.get("RANK", "0"))


def env_local_rank() -> int:
    """``LOCAL_RANK`` set by torchrun: the rank within this machine (0 outside it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched() -> bool:
    """True in a process started by torchrun (or alike) with more than one rank."""
    return env_world() > 1


# ----------------------------------------------------------------------------- collectives
def _buckets(tensors: list[torch.Tensor], bucket_bytes: int) -> Iterator[list[torch.Tensor]]:
    """Group tensors by (device, dtype) into lists of at most ``bucket_bytes`` (one tensor may exceed it)."""
    groups: dict[tuple[Any, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for group in groups.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for t in group:
            nbytes = t.numel() * t.element_size()
            if bucket and size + nbytes > bucket_bytes:
                yield bucket
                bucket, size = [], 0
            bucket.append(t)
            size += nbytes
        if bucket:
            yield bucket


def _coalesced(tensors: list[torch.Tensor], op: Callable[[torch.Tensor], None], bucket_bytes: int) -> None:
    """Apply an in-place collective ``op`` to ``tensors`` through flat buffers, writing results back."""
    for bucket in _buckets(tensors, bucket_bytes):
        flat = _flatten_dense_tensors(bucket)
        op(flat)
        for t, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            t.copy_(synced)


@dataclass
class DistributedSync(GradSync):
    """Gradient averaging and metric reduction over the default process group."""

    device: str = "cpu"
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    _owners: dict[int, nn.Module] = field(default_factory=dict, repr=False)

    def attach(self, modules: Modules) -> None:
        """Remember which module owns which parameters, so their BatchNorm statistics follow the gradients."""
        self._owners = {id(p): m for _, m in modules.items() for p in m.parameters()}

    def __call__(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks (and the running statistics of their module)."""
        params = list(params)
        grads = [p.grad for p in params if p.grad is not None]
        if self.world > 1 and grads:
            if any(g.is_sparse for g in grads):
                raise NotImplementedError("sparse gradients are not supported by DistributedSync")
            _coalesced(grads, self._all_reduce_mean, self.bucket_bytes)
        owner = self._owners.get(id(params[0])) if params else None
        if owner is not None and owner.training:
            self.sync_batchnorm_stats(owner)

    def _all_reduce_mean(self, flat: torch.Tensor) -> None:
        dist.all_reduce(flat)
        flat.div_(self.world)

    def sync_batchnorm_stats(self, module: nn.Module) -> None:
        """Average BatchNorm running means/variances over ranks (SyncBatchNorm layers are already in step)."""
        if self.world <= 1:
            return
        stats = []
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and not isinstance(layer, nn.SyncBatchNorm):
                stats += [b for b in (layer.running_mean, layer.running_var) if b is not None]
        if stats:
            _coalesced(stats, self._all_reduce_mean, self.bucket_bytes)

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a tensor of statistics over ranks (returned on the tensor's own device)."""
        if self.world <= 1:
            return values
        buf = values.detach().to(self.device, copy=True)
        dist.all_reduce(buf)
        return buf.to(values.device)

    def broadcast_modules(self, modules: Modules, src: int = 0) -> None:
        """Copy parameters and buffers of every module from rank ``src`` to all ranks."""
        if self.world <= 1:
            return
        tensors = [t.data for _, m in modules.items() for t in (*m.parameters(), *m.buffers())]
        _coalesced(tensors, lambda flat: dist.broadcast(flat, src), self.bucket_bytes)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order."""
        if self.world <= 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def init_distributed(device: str = "auto", timeout_minutes: float | None = None) -> DistributedSync:
    """Join the torchrun process group (nccl for CUDA, gloo otherwise) and return its :class:`DistributedSync`.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; on CUDA each
    process uses GPU ``LOCAL_RANK``. Calling it again reuses the existing group.
    """
    resolved = resolve_device(device)
    cuda = resolved.startswith("cuda")
    local_rank = env_local_rank()
    if cuda:
        if ":" in resolved and env_world() > 1:
            raise ValueError(f"device {device!r}: under torchrun pass cuda or auto; each process uses GPU LOCAL_RANK")
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asks for CUDA, which is not available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        resolved = f"cuda:{torch.cuda.current_device()}"
    if not dist.is_initialized():
        minutes = timeout_minutes or float(os.environ.get("DEEPOBF_DIST_TIMEOUT_MIN", "120"))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=minutes))
    return DistributedSync(rank=dist.get_rank(), world=dist.get_world_size(), device=resolved)


def shutdown() -> None:
    """Leave the process group if this process joined one (after a barrier: a rank that tears gloo down while
    another still talks to it can abort with "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _run_config_device(cfg: RunConfig, out: Path, resume: bool) -> str:
    run = RunDir(Path(out))
    return run.read_config().train.device if resume and run.exists() else cfg.train.device


def make_distributed_trainer(cfg: RunConfig, out: Path, resume: bool,
                             build: Callable[[GradSync, bool], Trainer]) -> Trainer:
    """One rank of a torchrun job: ``build(sync, resume)`` (a single-process trainer factory) in a safe order.

    Rank 0 creates (or re-opens) the run directory and builds the data cache first; then the first
    rank of every other machine (node-local caches); then all other ranks, which open the existing run
    and its latest checkpoint. An error on any rank is raised on all of them.
    """
    sync = init_distributed(_run_config_device(cfg, out, resume))
    turn = 0 if sync.rank == 0 else (1 if env_local_rank() == 0 else 2)
    trainer = None
    for current in range(3):
        error: Any = None
        if turn == current:
            try:
                trainer = build(sync, resume if sync.rank == 0 else True)
            except Exception as exc:  # raised on every rank below
                error = exc
        errors = sync.all_gather_object(_picklable(error))
        failed = [(rank, exc) for rank, exc in enumerate(errors) if exc is not None]
        if failed:
            if error is not None:
                raise error
            rank, exc = failed[0]
            raise exc if isinstance(exc, BaseException) else RuntimeError(f"rank {rank}: {exc}")
    assert trainer is not None
    batch = trainer.cfg.train.batch_size
    if batch < sync.world:
        raise ValueError(f"train.batch_size={batch} is smaller than the number of processes ({sync.world})")
    if batch % sync.world and sync.rank == 0:
        warnings.warn(f"train.batch_size={batch} is not a multiple of {sync.world} processes: shards differ in "
                      "size and averaged gradients weight their samples unequally", stacklevel=2)
    if trainer.device.startswith("cuda"):
        for name, module in trainer.modules.items():
            setattr(trainer.modules, name, nn.SyncBatchNorm.convert_sync_batchnorm(module))
    sync.attach(trainer.modules)
    sync.broadcast_modules(trainer.modules)
    if sync.rank > 0:  # independent dropout/noise streams; rank 0 keeps the single-process stream
        torch.manual_seed((trainer.cfg.train.seed * 1_000_003 + sync.rank * 7919
                           + trainer.position.global_step) % (2**63))
    return trainer


def _picklable(exc: BaseException | None) -> Any:
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def command_scope(command: str) -> Iterator[bool]:
    """How a CLI command runs under torchrun; yields False where this rank has nothing to do.

    Commands in :data:`DISTRIBUTED_COMMANDS` run on every rank with stdout silenced except on
    rank 0; any other command runs single-process on rank 0 only (torchrun's variables hidden).
    """
    if not launched():
        yield True
        return
    if command not in DISTRIBUTED_COMMANDS:
        if env_rank() != 0:
            yield False
            return
        saved = {k: os.environ.pop(k) for k in TORCHRUN_VARS if k in os.environ}
        try:
            yield True
        finally:
            os.environ.update(saved)
        return
    try:
        if env_rank() == 0:
            yield True
        else:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                yield True
    finally:
        shutdown()


__all__ = [
    "DISTRIBUTED_COMMANDS", "DistributedSync", "command_scope", "env_local_rank", "env_rank", "env_world",
    "init_distributed", "launched", "make_distributed_trainer", "shutdown",
]
