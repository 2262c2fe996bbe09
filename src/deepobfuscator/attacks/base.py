"""What every attacker receives: the frozen run, the attack budget and where to report progress."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from ..config import RunConfig
from ..losses import MSSSIMSettings
from ..training.modules import Modules

ALL_ATTACKERS = ("mirror", "urec1", "urec2", "resrec", "inversion", "vgg", "resnet", "linear")


@dataclass
class AttackSettings:
    """Budgets and options of an attack run (small CPU defaults; every value is recorded in attack.json)."""

    attackers: list[str] = field(default_factory=lambda: list(ALL_ATTACKERS))
    split: str = "test"  # evaluation split; attackers always train on the train split
    recon_epochs: int = 3
    attr_epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    eval_batch_size: int = 256
    recon_loss: str = "msssim"  # msssim = L(AR1) of training, or mse
    max_train_images: int | None = None  # seeded subset of the attackers' training split
    inversion_images: int = 16
    inversion_steps: int = 300
    inversion_lr: float = 0.2
    tv_weight: float = 0.2
    reid_images: int = 100
    reid_similarity: str = "msssim"  # msssim | mse
    grid_images: int = 8
    bootstrap: int = 500
    seed: int = 0
    device: str = "cpu"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if self.recon_loss not in ("msssim", "mse"):
            raise ValueError(f"attack recon_loss must be 'msssim' or 'mse', got {self.recon_loss!r}")
        if self.reid_similarity not in ("msssim", "mse"):
            raise ValueError(f"attack reid_similarity must be 'msssim' or 'mse', got {self.reid_similarity!r}")
        if self.split not in ("val", "test"):
            raise ValueError(f"attack split must be 'val' or 'test', got {self.split!r}")
        for name in ("recon_epochs", "attr_epochs", "inversion_steps", "inversion_images", "reid_images",
                     "grid_images", "bootstrap"):
            if getattr(self, name) < 0:
                raise ValueError(f"attack {name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"attack {name} must be >= 1, got {getattr(self, name)}")


@dataclass
class AttackContext:
    """The frozen deployed run an attacker works against."""

    cfg: RunConfig
    modules: Modules
    settings: AttackSettings
    msssim: MSSSIMSettings
    device: str = "cpu"
    progress: bool = True

    @property
    def image_size(self) -> tuple[int, int]:
        """The run's input size (H, W); every reconstruction has exactly this size."""
        return int(self.cfg.data.image_size[0]), int(self.cfg.data.image_size[1])


def attacker_seed(seed: int, *names: str) -> int:
    """A per-attacker seed that does not depend on which other attackers run or in which order."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2 ** 31)


Reconstruct = Callable[[torch.Tensor], torch.Tensor]
