"""The one training loop of every learned attacker: Adam on the fit part, early stopping on the held-out
validation part (patience, max epochs), best validation weights restored, the curve recorded.

An attacker still improving when it reaches its cap may train on (``extend`` epochs at most) while each window of
``patience`` epochs lowers its best validation loss by at least ``min_delta`` of it: a decoder that hit its cap gets
a larger one when it is still learning, and stops there when it has only crept for a window (the record says which).
Below the cap the rule is plain early stopping, so a fit that stopped early is the same under any extension."""
from __future__ import annotations

import copy
import itertools
import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..progress import progress_bar
from ..training.precision import set_precision
from .base import AttackContext
from .features import FeatureBatch, FeatureSet

BatchLoss = Callable[[nn.Module, FeatureBatch], torch.Tensor]
"""Mean loss of a model on one batch (targets are read from the batch's rows or images)."""


@torch.no_grad()
def validation_loss(model: nn.Module, val: FeatureSet, batch_loss: BatchLoss, batch_size: int,
                    with_images: bool) -> float:
    """Mean of ``batch_loss`` over ``val`` (weighted by batch size), model in eval mode."""
    model.eval()
    total, n = 0.0, 0
    for batch in val.batches(batch_size, with_images=with_images):
        total += float(batch_loss(model, batch)) * len(batch.rows)
        n += len(batch.rows)
    return total / max(n, 1)


def past_cap_stop(curve: list[dict[str, Any]], max_epochs: int, patience: int, extend: int,
                  min_delta: float) -> str | None:
    """Why training stops after the epochs in ``curve`` once it has reached ``max_epochs`` (None: go on).

    ``"cap"``: no extension allowed; ``"plateau"``: the last ``patience`` epochs lowered the best validation loss by
    less than ``min_delta`` of the best before them; ``"limit"``: ``max_epochs + extend`` epochs are done."""
    done = len(curve)
    if done < max_epochs:
        return None
    if extend <= 0 or not curve:
        return "cap"
    if done >= max_epochs + extend:
        return "limit"
    losses = [c["val_loss"] for c in curve]
    before, now = min(losses[:max(done - patience, 1)]), min(losses)
    return None if before - now > 0 and before - now >= min_delta * abs(before) else "plateau"


def fit_model(model: nn.Module, train: FeatureSet, val: FeatureSet, batch_loss: BatchLoss, ctx: AttackContext,
              seed: int, max_epochs: int, desc: str, with_images: bool = False,
              validate: Callable[[nn.Module], float] | None = None, extend: int = 0,
              min_delta: float = 0.0) -> dict[str, Any]:
    """Train ``model`` with Adam until ``validate`` (default: mean ``batch_loss`` on ``val``) has not improved
    for ``patience`` epochs or ``max_epochs`` are done (then on while :func:`past_cap_stop` allows, up to ``extend``
    more); restore the best validation weights.

    The model's forward runs in the judge's precision (``settings.amp``) from here on, at evaluation too.
    A stochastic feature set draws new features at every access, so each epoch (and each validation
    pass) sees a fresh draw; the torch RNG is seeded per ``(seed, epoch)`` so a run is reproducible.
    Returns the training record: epochs run, best epoch, per-epoch train/validation losses, seconds.
    """
    s = ctx.settings
    model.to(ctx.device)
    if torch.device(ctx.device).type == "cpu":  # oneDNN's convolutions run 10-40% faster on NHWC (same maths)
        model.to(memory_format=torch.channels_last)
    set_precision(model, s.amp, device=ctx.device)  # bf16 autocast when the judge runs in bf16; losses stay float32
    validate = validate or (lambda m: validation_loss(m, val, batch_loss, s.eval_batch_size, with_images))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=s.lr)
    batches = math.ceil(len(train) / s.batch_size)
    bar = progress_bar(total=max_epochs * batches, desc=desc, unit="batch", disable=not ctx.progress, leave=False)
    started = time.perf_counter()
    best_loss, best_epoch, best_state = math.inf, -1, copy.deepcopy(model.state_dict())
    curve: list[dict[str, Any]] = []
    stop: str | None = None
    for epoch in itertools.count():
        stop = past_cap_stop(curve, max_epochs, s.patience, extend, min_delta)
        if stop is not None:
            break
        if epoch == max_epochs:  # training on past the cap
            bar.total = (max_epochs + extend) * batches
        torch.manual_seed(seed * 10_007 + epoch)
        model.train()
        losses = []
        for batch in train.batches(s.batch_size, shuffle=True, seed=seed, epoch=epoch, with_images=with_images):
            bar.update(1)
            if len(batch.rows) < 2:  # BatchNorm needs two samples
                continue
            loss = batch_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}", best=f"{best_loss:.4f}")
        torch.manual_seed(seed * 10_007 + 5_003 + epoch)
        val_loss = float(validate(model))
        curve.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else None,
                      "val_loss": val_loss})
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch + 1, copy.deepcopy(model.state_dict())
        elif epoch + 1 - best_epoch >= s.patience:
            stop = "patience"
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return {"epochs": len(curve), "best_epoch": best_epoch if best_epoch > 0 else None,
            "max_epochs": max_epochs, "patience": s.patience,
            "stopped_early": len(curve) < max_epochs,
            **({"extend": extend, "min_delta": min_delta, "extended": max(0, len(curve) - max_epochs), "stop": stop}
               if extend > 0 else {}),
            "best_val_loss": best_loss if math.isfinite(best_loss) else None,
            "train_images": len(train), "val_images": len(val), "curve": curve,
            "seconds": round(time.perf_counter() - started, 3),
            "parameters": sum(p.numel() for p in trainable)}
