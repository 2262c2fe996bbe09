"""White-box inversion: the obfuscator ships on phones, so an attacker can hold its weights and search for an
image whose features match the observed ones (relative feature error plus a total-variation prior).

The search starts from the best earlier reconstruction (the learned decoder that scores best on the
attacker's own validation images) and from noise; the start and the number of refinement steps
(0 = keep the start as it is) are chosen on the attacker's validation images, so on those images the
refined result never scores below the decoder it started from.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..progress import progress_bar
from ..metrics import image_quality_report, mean_interval
from .base import AttackContext, AttackData, Evaluation, attacker_seed, precision_settings
from .reconstruction import from_uint8, score_images, to_uint8


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared difference of neighbouring pixels ``[N]``."""
    dh = (images[:, :, 1:, :] - images[:, :, :-1, :]).pow(2).flatten(1).mean(1)
    dw = (images[:, :, :, 1:] - images[:, :, :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


def checkpoints(steps: int) -> list[int]:
    """Step counts at which a refinement is looked at: 0, then doubling up to ``steps``."""
    out, k = [0], max(1, steps // 16)
    while k < steps:
        out.append(k)
        k *= 2
    return sorted(set(out + [steps]))


def noise_start(n: int, ctx: AttackContext, seed: int) -> torch.Tensor:
    """Near-mid-grey random images ``[n, 3, H, W]`` (the classic inversion start)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.sigmoid(0.01 * torch.randn(n, 3, *ctx.image_size, generator=generator))


def refine(target: torch.Tensor, start: torch.Tensor, ctx: AttackContext, keep: list[int], desc: str = "inversion"
           ) -> dict[int, torch.Tensor]:
    """Images after each of ``keep`` steps of Adam on ||send(x) - target||^2 / ||target||^2 + tv * TV(x) from
    ``start`` (x = sigmoid(z), so images stay in [0, 1]); step 0 is ``start`` itself."""
    s = ctx.settings
    pipeline = ctx.pipeline
    z = torch.logit(start.clamp(1e-3, 1 - 1e-3)).to(ctx.device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=s.inversion_lr)
    target = target.to(ctx.device)
    norm = target.pow(2).flatten(1).sum(1).clamp(min=1e-8)
    out = {0: start.detach().cpu().clone()} if 0 in keep else {}
    last = max(keep) if keep else 0
    bar = progress_bar(range(1, last + 1), desc=desc, unit="step", disable=not ctx.progress, leave=False)
    for step in bar:
        images = torch.sigmoid(z)
        match = (pipeline.send(images) - target).pow(2).flatten(1).sum(1) / norm
        loss = (match + s.tv_weight * total_variation(images)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(feature_error=f"{match.mean().item():.4f}")
        if step in keep:
            out[step] = torch.sigmoid(z).detach().cpu()
    return out


def choose_refinement(target: torch.Tensor, truth: torch.Tensor, starts: dict[str, torch.Tensor], ctx: AttackContext
                      ) -> tuple[str, int, dict[str, dict[int, float]]]:
    """The start and step count whose refinement has the best mean MS-SSIM against ``truth`` (the attacker's
    own validation images); returns them and the whole table start -> steps -> MS-SSIM."""
    keep = checkpoints(ctx.settings.inversion_steps)
    table: dict[str, dict[int, float]] = {}
    for name, start in starts.items():
        images = refine(target, start, ctx, keep, desc=f"inversion search ({name})")
        table[name] = {k: float(score_images(img.to(ctx.device), truth.to(ctx.device), ctx)[0].mean())
                       for k, img in images.items()}
    name, steps = max(((n, k) for n, row in table.items() for k in row), key=lambda nk: table[nk[0]][nk[1]])
    return name, steps, table


class WhiteBoxInversion:
    """Optimisation-based inversion of the frozen deployed pipeline, refining the best earlier reconstruction."""

    name = "inversion"
    kind = "reconstruction"
    floor = False
    uses_reconstructions = True  # waits for the learned decoders of its repeat count
    description = "white-box inversion of O (feature matching + TV prior), from the best decoder or noise"

    def __init__(self) -> None:
        self.choice: dict[str, Any] = {}

    def settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result."""
        s = ctx.settings
        return {"images": s.inversion_images, "steps": s.inversion_steps, "lr": s.inversion_lr,
                "tv_weight": s.tv_weight, "max_train_images": s.max_train_images, "val_fraction": s.val_fraction,
                **precision_settings(s)}  # it refines a decoder fitted in this precision

    def _decoder(self, data: AttackData, ctx: AttackContext, n: int) -> str | None:
        """The earlier reconstruction attacker with the best mean MS-SSIM on the validation probe images."""
        truth = data.val.image_tensor(data.val_probe_rows[:n]).to(ctx.device)
        scored = {name: float(score_images(from_uint8(imgs[:n]).to(ctx.device), truth, ctx)[0].mean())
                  for name, imgs in data.recon_val.items() if name != self.name and len(imgs) >= n}
        return max(scored, key=lambda k: scored[k]) if scored else None

    def fit(self, data: AttackData, ctx: AttackContext, seed: int) -> dict[str, Any]:
        """Choose the start (best decoder or noise) and the step count on the attacker's validation images."""
        n = min(ctx.settings.inversion_images, len(data.val_probe_rows))
        rows = data.val_probe_rows[:n]
        decoder = self._decoder(data, ctx, n)
        starts = {"noise": noise_start(n, ctx, attacker_seed(seed, self.name, "val"))}
        if decoder is not None:
            starts[decoder] = from_uint8(data.recon_val[decoder][:n])
        name, steps, table = choose_refinement(data.val.feature_tensor(rows), data.val.image_tensor(rows), starts, ctx)
        self.choice = {"start": name, "steps": steps, "decoder": decoder}
        return {**self.choice, "val_images": n,
                "val_ms_ssim": {k: {str(step): round(v, 6) for step, v in row.items()} for k, row in table.items()}}

    def evaluate(self, data: AttackData, ctx: AttackContext, seed: int) -> Evaluation:
        """Invert the first ``inversion_images`` query images with the chosen start and step count; score the result
        beside the best decoder's reconstructions of the *same* images (``compared_with``, ``gain`` with a paired 95%
        interval), since the decoders' own scores cover the whole evaluation set."""
        if not self.choice:
            raise ValueError(f"attacker '{self.name}' is not fitted")
        rows = np.asarray(data.query_rows[:ctx.settings.inversion_images])
        start_name, steps = self.choice["start"], self.choice["steps"]
        if start_name == "noise":
            start = noise_start(len(rows), ctx, attacker_seed(seed, self.name, "test"))
        else:
            start = from_uint8(data.recon_query[start_name][:len(rows)])
        images = refine(data.test.feature_tensor(rows), start, ctx, [steps], desc=f"attack {self.name}")[steps]
        truth = data.test.image_tensor(rows).to(ctx.device)
        ssim, peak = score_images(images.to(ctx.device), truth, ctx)
        report = image_quality_report(ssim, peak)
        if start_name != "noise":
            report["start_ms_ssim"] = round(float(score_images(start.to(ctx.device), truth, ctx)[0].mean()), 6)
        compared = self.choice.get("decoder")
        if compared is not None and compared in data.recon_query:
            base = score_images(from_uint8(data.recon_query[compared][:len(rows)]).to(ctx.device), truth, ctx)[0]
            gain = ssim - base
            low, high = mean_interval(gain)
            report.update({"compared_with": compared, "compared_ms_ssim": round(float(base.mean()), 6),
                           "gain": round(float(gain.mean()), 6),
                           "gain_ci95": [round(float(low), 6), round(float(high), 6)] if np.isfinite(low) else None})
        return Evaluation({**report, **self.choice}, to_uint8(images), None)

    def state(self) -> tuple[nn.Module, dict[str, Any]] | None:
        """Nothing learned: the inversion uses the run's own O."""
        return None
