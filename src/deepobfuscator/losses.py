"""Losses of the paper (Eqs. 1, 3, 6, 8) and the fixed noise image.

MS-SSIM is built on `pytorch_msssim` (its Gaussian window and filter; the per-scale SSIM and
contrast-structure terms follow its ``_ssim`` formula, computed once per image for several targets);
this module chooses window/scales for the image size and combines the scales. The *metric*
combines them as the library does (negative terms clipped to 0). The *loss* maps each term from
[-1, 1] to [0, 1] with ``(x + 1) / 2`` (floored at 1e-6) before the weighted product, so its
gradient stays finite and non-zero even for anti-correlated images, where the clipped form has a
zero (or NaN) gradient and a defender's loss would stall.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, gaussian_filter

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
        return {"implementation": "pytorch_msssim window and filter, SSIM terms as pytorch_msssim._ssim, "
                                  "deepobfuscator scale combination",
                "win_size": self.win_size, "levels": self.levels, "win_sigma": self.win_sigma,
                "weights": list(self.weights), "data_range": self.data_range, "k1": self.k1, "k2": self.k2,
                "loss_mapping": self.loss_mapping}


def resolve_msssim(cfg: MSSSIMConfig, image_size: tuple[int, int] | list[int]) -> MSSSIMSettings:
    """Fill in window size, scales and weights that fit ``image_size``; reject settings that do not."""
    short = min(image_size)
    if cfg.win_size is not None and (cfg.win_size < 3 or cfg.win_size % 2 == 0):
        raise ValueError(f"msssim.win_size must be an odd number >= 3, got {cfg.win_size}")
    if cfg.levels is not None and cfg.levels < 1:
        raise ValueError(f"msssim.levels must be at least 1, got {cfg.levels}")
    if cfg.win_size is None and cfg.levels is None:
        pairs: tuple[tuple[int, int], ...] = _CANDIDATES
    elif cfg.win_size is None:  # levels fixed: the largest window that fits
        pairs = tuple((w, cfg.levels) for w in (11, 9, 7, 5, 3))
    elif cfg.levels is None:  # window fixed: the most scales that fit
        pairs = tuple((cfg.win_size, n) for n in (5, 4, 3, 2, 1))
    else:
        pairs = ((cfg.win_size, cfg.levels),)
    fits = [p for p in pairs if short > (p[0] - 1) * 2 ** (p[1] - 1)]
    if not fits and cfg.win_size is None and cfg.levels is None:
        raise ValueError(f"no MS-SSIM window/scale setting fits images of short side {short} px")
    win, levels = fits[0] if fits else pairs[-1]  # no fit: the check below names the limit
    if short <= (win - 1) * 2 ** (levels - 1):
        raise ValueError(
            f"MS-SSIM with window {win} and {levels} scales needs images whose short side exceeds "
            f"{(win - 1) * 2 ** (levels - 1)} px; got {short} px (lower msssim.levels or msssim.win_size)"
        )
    if cfg.weights is not None:
        if len(cfg.weights) != levels:
            raise ValueError(f"msssim.weights has {len(cfg.weights)} entries for {levels} scales")
        weights = tuple(float(w) for w in cfg.weights)
    elif levels == len(DEFAULT_WEIGHTS):  # the standard 5 scales: exactly pytorch_msssim's weights
        weights = DEFAULT_WEIGHTS
    else:
        raw = DEFAULT_WEIGHTS[:levels]
        weights = tuple(w / sum(raw) for w in raw)
    if cfg.loss_mapping not in ("shifted", "clipped"):
        raise ValueError(f"msssim.loss_mapping must be 'shifted' or 'clipped', got {cfg.loss_mapping!r}")
    return MSSSIMSettings(win, levels, cfg.win_sigma, weights, cfg.data_range, cfg.k1, cfg.k2, cfg.loss_mapping)


def _blur(maps: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """pytorch_msssim's separable Gaussian filter applied to every channel of ``maps`` in one grouped conv per axis
    (on a channels-last copy: the depthwise convolution runs several times faster in that layout on CPUs)."""
    if maps.dim() == 4:
        maps = maps.contiguous(memory_format=torch.channels_last)
    return gaussian_filter(maps, win.repeat([maps.shape[1], 1, 1, 1]))


def ms_ssim_many(x: torch.Tensor, targets: list[torch.Tensor], s: MSSSIMSettings,
                 mapping: str = "clipped") -> list[torch.Tensor]:
    """Per-image MS-SSIM ``[N]`` of ``x`` against each target (``[N or 1, C, H, W]``), sharing the work on ``x``.

    The SSIM terms are those of ``pytorch_msssim._ssim`` (same window, constants and formula); the
    filtered maps of ``x`` are computed once for all targets, a batch-1 target (the noise image) is
    filtered once rather than per image, and the full SSIM map is formed only at the coarsest scale.
    """
    if mapping not in ("clipped", "shifted"):
        raise ValueError(f"unknown MS-SSIM mapping {mapping!r}")
    for t in targets:
        if t.shape[1:] != x.shape[1:] or t.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"MS-SSIM target of shape {tuple(t.shape)} does not match images {tuple(x.shape)}")
    c = x.shape[1]
    win = _fspecial_gauss_1d(s.win_size, s.win_sigma).to(x.device, x.dtype)
    c1, c2 = (s.k1 * s.data_range) ** 2, (s.k2 * s.data_range) ** 2
    terms: list[list[torch.Tensor]] = [[] for _ in targets]
    for level in range(s.levels):
        last = level == s.levels - 1
        xmaps = _blur(torch.cat([x, x * x] + [x * t for t in targets], dim=1), win)
        mu_x = xmaps[:, :c]
        mu_x_sq = mu_x.pow(2)
        sigma_x_sq = xmaps[:, c:2 * c] - mu_x_sq
        for i, t in enumerate(targets):
            tmaps = _blur(torch.cat([t, t * t], dim=1), win)
            mu_t = tmaps[:, :c]
            mu_t_sq = mu_t.pow(2)
            mu_xt = mu_x * mu_t
            sigma_t_sq = tmaps[:, c:] - mu_t_sq
            sigma_xt = xmaps[:, (2 + i) * c:(3 + i) * c] - mu_xt
            cs_map = (2 * sigma_xt + c2) / (sigma_x_sq + sigma_t_sq + c2)
            if last:
                cs_map = ((2 * mu_xt + c1) / (mu_x_sq + mu_t_sq + c1)) * cs_map  # the SSIM map
            terms[i].append(torch.flatten(cs_map, 2).mean(-1))  # [N, C]
        if not last:
            pad = [d % 2 for d in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            targets = [F.avg_pool2d(t, kernel_size=2, padding=pad) for t in targets]
    out = []
    for per_target in terms:
        stack = torch.stack(per_target, dim=0)  # [levels, N, C]
        if mapping == "clipped":
            stack = torch.relu(stack)
        else:
            stack = ((stack + 1.0) / 2.0).clamp(min=1e-6)
        weights = stack.new_tensor(s.weights).view(-1, 1, 1)
        out.append(torch.prod(stack ** weights, dim=0).mean(dim=1))
    return out


def ms_ssim(x: torch.Tensor, y: torch.Tensor, s: MSSSIMSettings, mapping: str = "clipped") -> torch.Tensor:
    """Per-image MS-SSIM ``[N]`` of ``x`` and ``y`` (NCHW in [0, data_range]; ``y`` may have batch 1).

    ``mapping='clipped'`` is the standard metric (as `pytorch_msssim.ms_ssim`); ``'shifted'`` is the
    gradient-safe form used inside losses.
    """
    return ms_ssim_many(x, [y], s, mapping)[0]


def msssim_loss(recon: torch.Tensor, target: torch.Tensor, s: MSSSIMSettings) -> torch.Tensor:
    """``1 - MS-SSIM`` averaged over the batch (L(AR1) with target = image, L(AR2) with target = noise)."""
    return 1.0 - ms_ssim(recon, target, s, mapping=s.loss_mapping).mean()


def msssim_losses(recon: torch.Tensor, targets: list[torch.Tensor], s: MSSSIMSettings) -> list[torch.Tensor]:
    """:func:`msssim_loss` against several targets at once (phase 0's L(AR1) and L(AR2)), sharing the work."""
    return [1.0 - v.mean() for v in ms_ssim_many(recon, targets, s, mapping=s.loss_mapping)]


def reconstruction_losses(recon: torch.Tensor, targets: list[torch.Tensor], kind: str,
                          s: MSSSIMSettings) -> list[torch.Tensor]:
    """:func:`reconstruction_loss` of ``recon`` against each of ``targets``."""
    if kind == "msssim":
        return msssim_losses(recon, targets, s)
    return [reconstruction_loss(recon, t, kind, s) for t in targets]


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


ATTRIBUTE_OBJECTIVES = ("negative_bce", "entropy")


def attribute_defence_loss(l_c: torch.Tensor, adv_logits: torch.Tensor, l_ac: torch.Tensor,
                           specs: list[AttributeSpec], objective: str, lambda1: float) -> torch.Tensor:
    """O's loss against attribute inference: ``L(C) - lambda1 L(AC)`` (``negative_bce``, the paper) or
    ``L(C) + lambda1 * negative entropy of AC`` (``entropy``)."""
    if objective == "negative_bce":
        return l_c - lambda1 * l_ac
    if objective == "entropy":
        return l_c + lambda1 * prediction_entropy_loss(adv_logits, specs)
    raise ValueError(f"unknown privacy.attribute_objective {objective!r} (known: {', '.join(ATTRIBUTE_OBJECTIVES)})")


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
