"""Losses of the paper (Eqs. 1, 3, 6, 8) and the fixed noise image.

MS-SSIM is built on `pytorch_msssim`'s SSIM core (Gaussian window, per-scale SSIM and
contrast-structure terms); this module only chooses window/scales for the image size and combines
the scales. The *metric* combines them as the library does (negative terms clipped to 0). The
*loss* maps each term from [-1, 1] to [0, 1] with ``(x + 1) / 2`` (floored at 1e-6) before the
weighted product, so its gradient stays finite and non-zero even for anti-correlated images, where
the clipped form has a zero (or NaN) gradient and a defender's loss would stall.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

from .config import MSSSIMConfig
from .data.index import AttributeSpec

DEFAULT_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# (window, scales) candidates, best first; a pair fits if short side > (window - 1) * 2 ** (scales - 1)
_CANDIDATES = ((11, 5), (9, 5), (7, 5), (7, 4), (5, 4), (7, 3), (5, 3), (3, 3), (3, 2))


@dataclass(frozen=True)
class MSSSIMSettings:
    """Resolved MS-SSIM settings (recorded in every run and attack result)."""

    win_size: int
    levels: int
    win_sigma: float
    weights: tuple[float, ...]
    data_range: float
    k1: float
    k2: float
    loss_mapping: str

    def as_dict(self) -> dict:
        """Plain dict for JSON/YAML."""
        return {"implementation": "pytorch_msssim._ssim core + deepobfuscator scale combination",
                "win_size": self.win_size, "levels": self.levels, "win_sigma": self.win_sigma,
                "weights": list(self.weights), "data_range": self.data_range, "k1": self.k1, "k2": self.k2,
                "loss_mapping": self.loss_mapping}


def resolve_msssim(cfg: MSSSIMConfig, image_size: tuple[int, int] | list[int]) -> MSSSIMSettings:
    """Fill in window size, scales and weights that fit ``image_size``; reject settings that do not."""
    short = min(image_size)
    if cfg.win_size is None or cfg.levels is None:
        for win, levels in _CANDIDATES:
            if (cfg.win_size in (None, win)) and (cfg.levels in (None, levels)) and short > (win - 1) * 2 ** (levels - 1):
                break
        else:
            raise ValueError(f"no MS-SSIM window/scale setting fits images of short side {short} px")
    else:
        win, levels = cfg.win_size, cfg.levels
    if win % 2 == 0:
        raise ValueError(f"msssim.win_size must be odd, got {win}")
    if short <= (win - 1) * 2 ** (levels - 1):
        raise ValueError(
            f"MS-SSIM with window {win} and {levels} scales needs images whose short side exceeds "
            f"{(win - 1) * 2 ** (levels - 1)} px; got {short} px (lower msssim.levels or msssim.win_size)"
        )
    if cfg.weights is not None:
        if len(cfg.weights) != levels:
            raise ValueError(f"msssim.weights has {len(cfg.weights)} entries for {levels} scales")
        weights = tuple(float(w) for w in cfg.weights)
    else:
        raw = DEFAULT_WEIGHTS[:levels]
        weights = tuple(w / sum(raw) for w in raw)
    if cfg.loss_mapping not in ("shifted", "clipped"):
        raise ValueError(f"msssim.loss_mapping must be 'shifted' or 'clipped', got {cfg.loss_mapping!r}")
    return MSSSIMSettings(win, levels, cfg.win_sigma, weights, cfg.data_range, cfg.k1, cfg.k2, cfg.loss_mapping)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, s: MSSSIMSettings, mapping: str = "clipped") -> torch.Tensor:
    """Per-image MS-SSIM ``[N]`` of ``x`` and ``y`` (NCHW in [0, data_range]).

    ``mapping='clipped'`` is the standard metric (as `pytorch_msssim.ms_ssim`); ``'shifted'`` is the
    gradient-safe form used inside losses.
    """
    if x.shape != y.shape:
        y = y.expand_as(x)
    win = _fspecial_gauss_1d(s.win_size, s.win_sigma).to(x.device, x.dtype)
    win = win.repeat([x.shape[1], 1, 1, 1])
    terms = []
    for level in range(s.levels):
        ssim_pc, cs = _ssim(x, y, data_range=s.data_range, win=win, size_average=False, K=(s.k1, s.k2))
        if level < s.levels - 1:
            terms.append(cs)
            pad = [d % 2 for d in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
    terms.append(ssim_pc)
    stack = torch.stack(terms, dim=0)  # [levels, N, C]
    if mapping == "clipped":
        stack = torch.relu(stack)
    elif mapping == "shifted":
        stack = ((stack + 1.0) / 2.0).clamp(min=1e-6)
    else:
        raise ValueError(f"unknown MS-SSIM mapping {mapping!r}")
    weights = stack.new_tensor(s.weights).view(-1, 1, 1)
    return torch.prod(stack ** weights, dim=0).mean(dim=1)


def msssim_loss(recon: torch.Tensor, target: torch.Tensor, s: MSSSIMSettings) -> torch.Tensor:
    """``1 - MS-SSIM`` averaged over the batch (L(AR1) with target = image, L(AR2) with target = noise)."""
    return 1.0 - ms_ssim(recon, target, s, mapping=s.loss_mapping).mean()


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str, s: MSSSIMSettings) -> torch.Tensor:
    """The configured reconstruction loss: ``msssim`` (paper) or pixel ``mse`` (PAN)."""
    if kind == "msssim":
        return msssim_loss(recon, target, s)
    if kind == "mse":
        return F.mse_loss(recon, target.expand_as(recon))
    raise ValueError(f"unknown reconstruction loss {kind!r} (msssim or mse)")


def split_logits(logits: torch.Tensor, specs: list[AttributeSpec]) -> list[torch.Tensor]:
    """Cut a classifier's output into one logit block per attribute."""
    return list(torch.split(logits, [s.num_outputs for s in specs], dim=1))


def attribute_loss(logits: torch.Tensor, targets: torch.Tensor, specs: list[AttributeSpec]) -> torch.Tensor:
    """Mean over attributes of BCE (binary, Eqs. 1 and 3) or cross-entropy (multi-class)."""
    losses = []
    for i, (block, spec) in enumerate(zip(split_logits(logits, specs), specs)):
        if spec.binary:
            losses.append(F.binary_cross_entropy_with_logits(block[:, 0], targets[:, i].float()))
        else:
            losses.append(F.cross_entropy(block, targets[:, i]))
    return torch.stack(losses).mean()


def prediction_entropy_loss(logits: torch.Tensor, specs: list[AttributeSpec]) -> torch.Tensor:
    """Negative mean prediction entropy (normalised to [0, 1] per attribute): minimising it pushes an
    adversary's predictions towards uniform, a bounded alternative to maximising its BCE."""
    terms = []
    for block, spec in zip(split_logits(logits, specs), specs):
        if spec.binary:
            p = torch.sigmoid(block[:, 0])
            ent = -(p * torch.log(p + 1e-8) + (1 - p) * torch.log(1 - p + 1e-8)) / np.log(2)
        else:
            logp = F.log_softmax(block, dim=1)
            ent = -(logp.exp() * logp).sum(1) / np.log(spec.num_classes)
        terms.append(ent.mean())
    return -torch.stack(terms).mean()


def predictions(logits: torch.Tensor, specs: list[AttributeSpec]) -> torch.Tensor:
    """Predicted class per attribute ``[N, n_attr]`` (int64)."""
    cols = []
    for block, spec in zip(split_logits(logits, specs), specs):
        cols.append((block[:, 0] > 0).long() if spec.binary else block.argmax(1))
    return torch.stack(cols, dim=1)


def probabilities(logits: torch.Tensor, specs: list[AttributeSpec]) -> list[torch.Tensor]:
    """Per attribute: P(positive) ``[N]`` for binary, softmax ``[N, K]`` for multi-class."""
    return [torch.sigmoid(b[:, 0]) if s.binary else torch.softmax(b, 1) for b, s in zip(split_logits(logits, specs), specs)]


def make_noise_image(image_size: tuple[int, int] | list[int], seed: int, std: float = 0.25) -> np.ndarray:
    """The run's fixed Gaussian noise image I_noise as ``uint8 [H, W, 3]`` (mean 0.5, clipped to [0, 1])."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.5, std, size=(int(image_size[0]), int(image_size[1]), 3))
    return (np.clip(noise, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
