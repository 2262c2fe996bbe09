"""Mixed precision (bf16 autocast) and channels-last memory format for the modules of a run.

Each module's forward runs under autocast and returns float32, so losses (BCE, MS-SSIM with its
``E[x^2] - E[x]^2`` variances) are always computed in float32 and backward runs outside autocast.
Weights and optimiser state stay float32; checkpoints are unchanged.
"""
from __future__ import annotations

import contextlib
import types
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from .modules import Modules

AMP_MODES = {"none": None, "bf16": torch.bfloat16}
AUTO = "auto"  # bf16 where the device computes it natively, else none (resolved when a run is created)
AMP_CHOICES = (*AMP_MODES, AUTO)  # what train.amp and deepobf attack --amp accept
_ATTR = "_deepobf_precision"
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 arithmetic


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (elsewhere bf16 is emulated and slower than float32)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


NARROW_WIDTH = 0.5  # channel multipliers up to this run NHWC faster on a CPU (benchmarks/results/input_layout.md)


def resolve_channels_last(value: bool | str, device: str, width: float) -> bool:
    """``auto`` -> NHWC on a CPU for a narrow model (``width`` <= :data:`NARROW_WIDTH`), NCHW otherwise (measured
    on a 2-core AVX2 CPU: width 0.125-0.25 steps 1.2x faster in NHWC, width 1.0 1.2x slower); booleans unchanged."""
    if value == AUTO:
        return torch.device(device).type == "cpu" and width <= NARROW_WIDTH
    if not isinstance(value, bool):
        raise ConfigError(f"train.channels_last must be true, false or auto, got {value!r}")
    return value


def resolve_amp(amp: str, device: str) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``none``; other values unchanged (validated)."""
    if amp == AUTO:
        return "bf16" if native_bf16(device) else "none"
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {sorted(AMP_CHOICES)}, got {amp!r}")
    return amp


def autocast(device: str, amp: str = "none") -> contextlib.AbstractContextManager:
    """Autocast to ``amp`` on ``device``'s type (cuda or cpu); a null context for ``none``."""
    dtype = AMP_MODES[resolve_amp(amp, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _to_channels_last(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_float32(v) for k, v in value.items()}
    return value


def _precision_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    device, amp, channels_last = getattr(self, _ATTR)
    if channels_last:
        args = tuple(_to_channels_last(a) for a in args)
    with autocast(device, amp):
        out = type(self).forward(self, *args, **kwargs)
    return _to_float32(out) if amp != "none" else out


def apply_precision(modules: Modules, amp: str = "none", channels_last: bool = False, device: str = "cpu") -> None:
    """Make every module of ``modules`` run with ``amp`` autocast and/or channels-last (no-op for the defaults)."""
    for _, module in modules.items():
        set_precision(module, amp, channels_last, device)


def set_precision(module: nn.Module, amp: str = "none", channels_last: bool = False, device: str = "cpu") -> None:
    """Make ``module``'s forward run under ``amp`` autocast (returning float32) and/or take channels-last input; its
    weights stay float32 and its state dict unchanged. A no-op for float32 without channels-last."""
    amp = resolve_amp(amp, device)
    if amp == "none" and not channels_last:
        return
    if channels_last:
        module.to(memory_format=torch.channels_last)
    setattr(module, _ATTR, (device, amp, channels_last))
    module.forward = types.MethodType(_precision_forward, module)
