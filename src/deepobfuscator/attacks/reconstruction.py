"""Learned reconstruction attackers (mirror AR, URec#1, URec#2, ResRec) trained from scratch on frozen features,
and the evaluation shared by every reconstruction attacker (MS-SSIM and PSNR per image)."""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from ..progress import progress_bar

from ..losses import reconstruction_loss
from ..metrics import image_quality_report, ms_ssim_per_image, psnr
from ..models import build_reconstructor
from .base import AttackContext, Reconstruct, attacker_seed
from .features import FeatureSet


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW float in [0, 1] -> ``uint8 [N, H, W, 3]``."""
    return (images.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def train_reconstructor(model: nn.Module, train: FeatureSet, ctx: AttackContext, seed: int, desc: str) -> dict[str, Any]:
    """Fit ``model`` (features -> image) on ``train`` with L(AR1) (MS-SSIM loss) or MSE; return training stats."""
    s = ctx.settings
    model.to(ctx.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    steps_per_epoch = math.ceil(len(train) / s.batch_size)
    bar = progress_bar(total=s.recon_epochs * steps_per_epoch, desc=desc, unit="batch", disable=not ctx.progress, leave=False)
    started, last_losses = time.perf_counter(), []
    for epoch in range(s.recon_epochs):
        last_losses = []
        for batch in train.batches(s.batch_size, shuffle=True, seed=seed, epoch=epoch, with_images=True):
            bar.update(1)
            if len(batch.rows) < 2:  # BatchNorm needs two samples
                continue
            recon = model(batch.features.to(ctx.device))
            loss = reconstruction_loss(recon, batch.images.to(ctx.device), s.recon_loss, ctx.msssim)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            last_losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    model.eval()
    return {"epochs": s.recon_epochs, "train_images": len(train), "loss": s.recon_loss,
            "final_epoch_loss": float(np.mean(last_losses)) if last_losses else None,
            "seconds": round(time.perf_counter() - started, 3)}


@torch.no_grad()
def _predict(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features)


class LearnedReconstruction:
    """A reconstructor architecture from the model registry, trained from scratch on the attackers' split."""

    kind = "reconstruction"
    trains = True

    def __init__(self, name: str, architecture: str, description: str) -> None:
        self.name, self.architecture, self.description = name, architecture, description

    def relevant_settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result (a stored result with other values is retrained)."""
        s = ctx.settings
        return {"architecture": self.architecture, "epochs": s.recon_epochs, "lr": s.lr, "batch_size": s.batch_size,
                "loss": s.recon_loss, "max_train_images": s.max_train_images, "seed": s.seed}

    def eval_rows(self, test: FeatureSet, query_rows: np.ndarray, ctx: AttackContext) -> np.ndarray:
        """Evaluation rows: the whole evaluation split."""
        return np.arange(len(test))

    def prepare(self, train: FeatureSet | None, ctx: AttackContext) -> tuple[Reconstruct, dict[str, Any]]:
        """Train the reconstructor on ``train``; return its reconstruct function and training stats."""
        if train is None:
            raise ValueError(f"attacker '{self.name}' needs training features")
        seed = attacker_seed(ctx.settings.seed, self.name)
        torch.manual_seed(seed)
        m = ctx.cfg.model
        channels, h, w = train.features.shape[1:]
        model = build_reconstructor(self.architecture, channels, (h, w), ctx.image_size, width=m.width,
                                    batch_norm=m.batch_norm)
        stats = train_reconstructor(model, train, ctx, seed, desc=f"attack {self.name}")
        stats["parameters"] = sum(p.numel() for p in model.parameters())
        return (lambda feats: _predict(model, feats)), stats


def evaluate_reconstruction(reconstruct: Reconstruct, test: FeatureSet, rows: np.ndarray, keep_rows: np.ndarray,
                            ctx: AttackContext, desc: str = "evaluate") -> tuple[dict[str, Any], np.ndarray]:
    """MS-SSIM and PSNR of ``reconstruct`` on test ``rows``; also the uint8 reconstructions of ``keep_rows``
    (those among ``rows``, in the order of ``keep_rows``)."""
    size = ctx.image_size
    scores_ssim, scores_psnr = [], []
    kept: dict[int, np.ndarray] = {}
    wanted = set(int(r) for r in keep_rows)
    bs = ctx.settings.eval_batch_size
    for start in progress_bar(range(0, len(rows), bs), desc=desc, disable=not ctx.progress, leave=False):
        batch_rows = rows[start:start + bs]
        recon = reconstruct(test.feature_tensor(batch_rows).to(ctx.device)).detach()
        if tuple(recon.shape[-2:]) != size:
            raise ValueError(f"reconstructor output {tuple(recon.shape[-2:])} differs from the run's image size {size}")
        images = test.image_tensor(batch_rows).to(ctx.device)
        recon = recon.clamp(0, 1)
        scores_ssim.append(ms_ssim_per_image(recon, images, ctx.msssim).cpu().numpy())
        scores_psnr.append(psnr(recon, images, ctx.msssim.data_range).cpu().numpy())
        pixels = to_uint8(recon)
        for i, row in enumerate(batch_rows):
            if int(row) in wanted:
                kept[int(row)] = pixels[i]
    report = image_quality_report(np.concatenate(scores_ssim) if scores_ssim else np.zeros(0),
                                  np.concatenate(scores_psnr) if scores_psnr else np.zeros(0))
    order = [int(r) for r in keep_rows if int(r) in kept]
    recons = np.stack([kept[r] for r in order]) if order else np.zeros((0, *size, 3), np.uint8)
    return report, recons
