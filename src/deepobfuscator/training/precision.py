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
_ATTR = "_deepobf_precision"


def autocast(device: str, amp: str = "none") -> contextlib.AbstractContextManager:
    """Autocast to ``amp`` on ``device``'s type (cuda or cpu); a null context for ``none``."""
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {sorted(AMP_MODES)}, got {amp!r}")
    dtype = AMP_MODES[amp]
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
    autocast(device, amp)  # validates amp
    if amp == "none" and not channels_last:
        return
    for _, module in modules.items():
        if channels_last:
            module.to(memory_format=torch.channels_last)
        setattr(module, _ATTR, (device, amp, channels_last))
        module.forward = types.MethodType(_precision_forward, module)
