"""Job slots: run several training commands at once, one per GPU (or ``k`` per GPU), each pinned with
``CUDA_VISIBLE_DEVICES``; without GPUs, one after the other."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import torch


def gpu_slots(per_gpu: int = 1) -> list[str]:
    """Visible GPU ids (honouring ``CUDA_VISIBLE_DEVICES``), each repeated ``per_gpu`` times; [] without GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    else:
        ids = [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return [gpu for gpu in ids for _ in range(max(1, per_gpu))]


def run_commands(commands: Sequence[Sequence[str]], slots: Sequence[str | None] | None = None,
                 env: dict[str, str] | None = None, log_dir: str | Path | None = None,
                 poll_seconds: float = 0.5) -> list[int]:
    """Run subprocess ``commands``, as many at once as there are ``slots``; return their exit codes in order.

    Each running command gets ``CUDA_VISIBLE_DEVICES`` set to its slot (``None`` leaves it alone);
    ``slots`` defaults to :func:`gpu_slots` (one run per GPU), or one sequential CPU slot without GPUs.
    With ``log_dir``, command ``i`` writes stdout and stderr to ``log_dir/run-<i>.log``.
    """
    free: list[str | None] = list(slots) if slots is not None else (gpu_slots() or [None])
    if not free:
        raise ValueError("run_commands needs at least one slot")
    pending = list(enumerate(commands))[::-1]
    running: list[tuple[int, subprocess.Popen, str | None, Any]] = []
    codes: list[int] = [0] * len(commands)
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and free:
                i, cmd = pending.pop()
                slot = free.pop(0)
                child_env = {**os.environ, **(env or {})}
                if slot is not None:
                    child_env["CUDA_VISIBLE_DEVICES"] = slot
                log = open(Path(log_dir) / f"run-{i}.log", "w") if log_dir is not None else None
                proc = subprocess.Popen(list(cmd), env=child_env, stdout=log, stderr=subprocess.STDOUT if log else None)
                running.append((i, proc, slot, log))
            done = [r for r in running if r[1].poll() is not None]
            if not done:
                time.sleep(poll_seconds)
            for item in done:
                i, proc, slot, log = item
                codes[i] = int(proc.returncode)
                if log is not None:
                    log.close()
                running.remove(item)
                free.append(slot)
    finally:
        for _, proc, _, log in running:
            proc.terminate()
            if log is not None:
                log.close()
    return codes
