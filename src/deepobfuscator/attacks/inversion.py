"""White-box inversion: the obfuscator ships on phones, so an attacker can hold its weights and search for an
image whose features match the observed ones (relative feature error plus a total-variation prior)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ..progress import progress_bar

from .base import AttackContext, Reconstruct, attacker_seed
from .features import FeatureSet, obfuscate


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared difference of neighbouring pixels ``[N]``."""
    dh = (images[:, :, 1:, :] - images[:, :, :-1, :]).pow(2).flatten(1).mean(1)
    dw = (images[:, :, :, 1:] - images[:, :, :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


def invert_features(target: torch.Tensor, ctx: AttackContext, seed: int, desc: str = "inversion") -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [0, 1] minimising ||obfuscate(x) - target||^2 / ||target||^2 + tv * TV(x).

    The image is parameterised as ``sigmoid(z)`` (so it stays in [0, 1]) and starts near mid-grey;
    each image's loss is independent of the others in the batch (O runs in eval mode).
    """
    s = ctx.settings
    modules = ctx.modules
    modules.obfuscator.eval()
    generator = torch.Generator().manual_seed(seed)
    h, w = ctx.image_size
    z = (0.01 * torch.randn(len(target), 3, h, w, generator=generator)).to(ctx.device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=s.inversion_lr)
    norm = target.pow(2).flatten(1).sum(1).clamp(min=1e-8)
    bar = progress_bar(range(s.inversion_steps), desc=desc, unit="step", disable=not ctx.progress, leave=False)
    for _ in bar:
        images = torch.sigmoid(z)
        feats = obfuscate(ctx.cfg, modules, images)
        match = (feats - target).pow(2).flatten(1).sum(1) / norm
        loss = (match + s.tv_weight * total_variation(images)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(feature_error=f"{match.mean().item():.4f}")
    return torch.sigmoid(z).detach()


class WhiteBoxInversion:
    """Optimisation-based inversion of the frozen obfuscator; needs no training data."""

    name = "inversion"
    kind = "reconstruction"
    trains = False
    description = "white-box inversion of O (feature matching + TV prior)"

    def relevant_settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result."""
        s = ctx.settings
        return {"images": s.inversion_images, "steps": s.inversion_steps, "lr": s.inversion_lr,
                "tv_weight": s.tv_weight, "seed": s.seed}

    def eval_rows(self, test: FeatureSet, query_rows: np.ndarray, ctx: AttackContext) -> np.ndarray:
        """Evaluation rows: the first ``inversion_images`` query images (inversion is costly per image)."""
        return np.asarray(query_rows[:ctx.settings.inversion_images])

    def prepare(self, train: FeatureSet | None, ctx: AttackContext) -> tuple[Reconstruct, dict[str, Any]]:
        """The inversion as a reconstruct function (no training)."""
        seed = attacker_seed(ctx.settings.seed, self.name)
        calls = [0]

        def reconstruct(features: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            return invert_features(features, ctx, seed + calls[0], desc=f"attack {self.name}")

        return reconstruct, {"steps": ctx.settings.inversion_steps, "tv_weight": ctx.settings.tv_weight}
