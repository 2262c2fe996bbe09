"""Learned reconstruction attackers (mirror AR, URec#1, URec#2, ResRec) trained from scratch on frozen features
with the shared fit loop, and the evaluation shared by every reconstruction attacker (MS-SSIM and PSNR per
image; kept reconstructions of the query and validation-probe rows)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import images_to_tensor
from ..progress import progress_bar
from ..losses import reconstruction_loss
from ..metrics import image_quality_report, ms_ssim_per_image, psnr
from .base import AttackContext, AttackData, Evaluation, Reconstruct, attacker_seed, precision_settings
from .features import FeatureBatch, FeatureSet
from .fit import fit_model
from .heads import build_from_spec, reconstructor_spec


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW float in [0, 1] -> ``uint8 [N, H, W, 3]``."""
    return (images.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> NCHW float in [0, 1] (:func:`deepobfuscator.data.images_to_tensor`)."""
    return images_to_tensor(images)


def score_images(recon: torch.Tensor, images: torch.Tensor, ctx: AttackContext) -> tuple[np.ndarray, np.ndarray]:
    """Per-image MS-SSIM and PSNR of reconstructions against raw images (both NCHW in [0, 1])."""
    size = ctx.image_size
    if tuple(recon.shape[-2:]) != size:
        raise ValueError(f"reconstructor output {tuple(recon.shape[-2:])} differs from the run's image size {size}")
    recon = recon.clamp(0, 1).to(images.device)
    return (ms_ssim_per_image(recon, images, ctx.msssim).cpu().numpy(),
            psnr(recon, images, ctx.msssim.data_range).cpu().numpy())


@torch.no_grad()
def reconstruct_rows(reconstruct: Reconstruct, features: FeatureSet, rows: np.ndarray, ctx: AttackContext
                     ) -> np.ndarray:
    """uint8 reconstructions of set ``rows`` (in that order)."""
    out = [to_uint8(reconstruct(features.feature_tensor(rows[i:i + ctx.settings.eval_batch_size]).to(ctx.device)))
           for i in range(0, len(rows), ctx.settings.eval_batch_size)]
    return np.concatenate(out) if out else np.zeros((0, *ctx.image_size, 3), np.uint8)


def evaluate_reconstruction(reconstruct: Reconstruct, data: AttackData, ctx: AttackContext,
                            desc: str = "evaluate") -> Evaluation:
    """MS-SSIM and PSNR of ``reconstruct`` on the whole evaluation set; kept query and validation-probe images."""
    test = data.test
    scores_ssim, scores_psnr = [], []
    kept: dict[int, np.ndarray] = {}
    wanted = set(int(r) for r in data.query_rows)
    bs = ctx.settings.eval_batch_size
    with torch.no_grad():
        for start in progress_bar(range(0, len(test), bs), desc=desc, disable=not ctx.progress, leave=False):
            rows = np.arange(start, min(start + bs, len(test)))
            recon = reconstruct(test.feature_tensor(rows).to(ctx.device)).detach()
            a, b = score_images(recon, test.image_tensor(rows).to(ctx.device), ctx)
            scores_ssim.append(a)
            scores_psnr.append(b)
            pixels = to_uint8(recon)
            for i, row in enumerate(rows):
                if int(row) in wanted:
                    kept[int(row)] = pixels[i]
    report = image_quality_report(np.concatenate(scores_ssim) if scores_ssim else np.zeros(0),
                                  np.concatenate(scores_psnr) if scores_psnr else np.zeros(0))
    query = (np.stack([kept[int(r)] for r in data.query_rows]) if len(data.query_rows)
             else np.zeros((0, *ctx.image_size, 3), np.uint8))
    val = reconstruct_rows(reconstruct, data.val, data.val_probe_rows, ctx)
    return Evaluation(report, query, val)


def image_batch_loss(ctx: AttackContext):
    """The fit loop's loss for reconstructors: L(AR1) = 1 - MS-SSIM (or MSE) against the rows' raw images."""
    def loss(model: nn.Module, batch: FeatureBatch) -> torch.Tensor:
        recon = model(batch.features.to(ctx.device))
        return reconstruction_loss(recon, batch.images.to(ctx.device), ctx.settings.recon_loss, ctx.msssim)
    return loss


EXTENSION_KEYS = ("extend", "min_delta")  # the cap extension's settings in a record (absent from older records)


def extension_settings(s: Any) -> dict[str, Any]:
    """The cap extension's settings as a stored record keeps them (nothing when there is none: records written
    before the extension existed match a judge run without it)."""
    return dict(zip(EXTENSION_KEYS, (s.recon_extend, s.extend_min_delta))) if s.recon_extend > 0 else {}


class LearnedReconstructor:
    """A reconstructor architecture from the model registry, trained from scratch on the attackers' split."""

    kind = "reconstruction"
    floor = False

    def __init__(self, name: str, architecture: str, description: str) -> None:
        self.name, self.architecture, self.description = name, architecture, description
        self.model: nn.Module | None = None
        self.spec: dict[str, Any] | None = None
        self.initial: nn.Module | None = None

    def start_from(self, fitted: nn.Module) -> None:
        """Start the next fit from ``fitted``'s weights (the same attacker fitted at a smaller repeat count)."""
        self.initial = fitted

    def settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result (a stored result with other values is retrained)."""
        s = ctx.settings
        return {"architecture": self.architecture, "max_epochs": s.recon_epochs, **extension_settings(s),
                "patience": s.patience,
                "val_fraction": s.val_fraction, "lr": s.lr, "batch_size": s.batch_size, "loss": s.recon_loss,
                "max_train_images": s.max_train_images, **precision_settings(s)}

    def fit(self, data: AttackData, ctx: AttackContext, seed: int) -> dict[str, Any]:
        """Train the reconstructor on ``data.train`` with early stopping on ``data.val``."""
        s = attacker_seed(seed, self.name)
        torch.manual_seed(s)
        self.spec = reconstructor_spec(self.architecture, data.train.feature_shape, ctx.image_size, ctx.cfg.model)
        self.model = build_from_spec(self.spec)
        if self.initial is not None:
            self.model.load_state_dict(self.initial.state_dict())
        record = fit_model(self.model, data.train, data.val, image_batch_loss(ctx), ctx, s, ctx.settings.recon_epochs,
                           desc=f"attack {self.name}", with_images=True, extend=ctx.settings.recon_extend,
                           min_delta=ctx.settings.extend_min_delta)
        return {**record, "loss": ctx.settings.recon_loss, "warm_start": self.initial is not None}

    def evaluate(self, data: AttackData, ctx: AttackContext, seed: int) -> Evaluation:
        """Reconstruct every evaluation image and score it."""
        if self.model is None:
            raise ValueError(f"attacker '{self.name}' is not fitted")
        model = self.model.eval()
        return evaluate_reconstruction(lambda feats: model(feats), data, ctx, desc=f"evaluate {self.name}")

    def state(self) -> tuple[nn.Module, dict[str, Any]] | None:
        """The fitted reconstructor and its build spec."""
        return None if self.model is None else (self.model, {"kind": self.kind, "model": self.spec})
