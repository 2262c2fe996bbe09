"""Attack models for any feature shape: wide maps, few channels, low resolution or plain vectors.

A defence may send O's full map ``[N, C, h, w]``, a bottleneck such as ``[N, 1, 8, 8]`` or a vector
``[N, D]``. :class:`FeatureAdapter` turns any of these into a map big enough for the registered
classifier or reconstructor (vectors become ``[N, D, 1, 1]``; small maps are upsampled), and
:class:`MLPHead` reads the flattened features directly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..models import build_classifier, build_reconstructor

MIN_HW = {"vgg": 8, "resnet": 1, "linear": 1}  # smallest map each classifier head accepts (VGG: three 2x pools)
RECON_MIN_HW = 4  # reconstructors get at least a 4x4 map


class FeatureAdapter(nn.Module):
    """Features of shape ``feature_shape`` -> a map ``[N, C, H, W]`` with H, W >= ``min_hw`` (nearest upsampling)."""

    def __init__(self, feature_shape: tuple[int, ...], min_hw: int = 1) -> None:
        super().__init__()
        self.feature_shape = tuple(int(d) for d in feature_shape)
        if len(self.feature_shape) == 1:
            c, h, w = self.feature_shape[0], 1, 1
        elif len(self.feature_shape) == 2:  # [C, L] sequences: one row
            c, h, w = self.feature_shape[0], 1, self.feature_shape[1]
        elif len(self.feature_shape) == 3:
            c, h, w = self.feature_shape
        else:
            raise ValueError(f"features of shape {self.feature_shape} per image are not supported "
                             "(expected [D], [C, L] or [C, H, W])")
        self.in_shape = (c, h, w)
        self.out_hw = (max(h, min_hw), max(w, min_hw))

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """Channels and spatial size of the adapted map."""
        return self.in_shape[0], *self.out_hw

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Reshape to a map and upsample when smaller than the head needs."""
        x = features.reshape(len(features), *self.in_shape)
        if tuple(x.shape[-2:]) != self.out_hw:
            x = nn.functional.interpolate(x, size=self.out_hw, mode="nearest")
        return x


class MLPHead(nn.Module):
    """An MLP on the flattened, standardised features: two hidden layers (ReLU, dropout), one output per logit."""

    def __init__(self, in_features: int, num_outputs: int, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.BatchNorm1d(in_features),  # per-value standardisation (works for one logit)
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features of any shape ``[N, ...]`` -> logits ``[N, num_outputs]``."""
        return self.net(features)


def flat_size(feature_shape: tuple[int, ...]) -> int:
    """Number of values per image."""
    out = 1
    for d in feature_shape:
        out *= int(d)
    return out


def classifier_spec(architecture: str, feature_shape: tuple[int, ...], num_outputs: int, model: ModelConfig,
                    mlp_hidden: int) -> dict[str, Any]:
    """The JSON-able build spec of an attribute attack model (enough to rebuild it with :func:`build_from_spec`)."""
    return {"role": "classifier", "architecture": architecture, "feature_shape": list(feature_shape),
            "num_outputs": num_outputs, "width": model.width, "fc_width": model.fc_width,
            "batch_norm": model.batch_norm, "dropout": model.dropout, "mlp_hidden": mlp_hidden}


def reconstructor_spec(architecture: str, feature_shape: tuple[int, ...], image_size: tuple[int, int],
                       model: ModelConfig) -> dict[str, Any]:
    """The JSON-able build spec of a reconstruction attack model."""
    return {"role": "reconstructor", "architecture": architecture, "feature_shape": list(feature_shape),
            "image_size": list(image_size), "width": model.width, "batch_norm": model.batch_norm}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """An untrained attack model from its build spec (classifier: MLP or adapter + registered head;
    reconstructor: adapter + registered reconstructor)."""
    shape = tuple(spec["feature_shape"])
    arch = spec["architecture"]
    if spec["role"] == "classifier":
        if arch == "mlp":
            return MLPHead(flat_size(shape), spec["num_outputs"], spec["mlp_hidden"])
        adapter = FeatureAdapter(shape, MIN_HW.get(arch, 1))
        c, h, w = adapter.out_shape
        head = build_classifier(arch, c, (h, w), spec["num_outputs"], width=spec["width"],
                                fc_width=spec["fc_width"], batch_norm=spec["batch_norm"], dropout=spec["dropout"])
        return nn.Sequential(adapter, head)
    if spec["role"] == "reconstructor":
        adapter = FeatureAdapter(shape, RECON_MIN_HW)
        c, h, w = adapter.out_shape
        return nn.Sequential(adapter, build_reconstructor(arch, c, (h, w), tuple(spec["image_size"]),
                                                          width=spec["width"], batch_norm=spec["batch_norm"]))
    raise ValueError(f"attack model spec: unknown role {spec['role']!r} (classifier or reconstructor)")
