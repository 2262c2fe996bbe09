"""What every attacker receives and returns: the attack budget, the frozen deployed run, the feature sets,
and the :class:`Attacker` protocol the suite loops over."""
from __future__ import annotations

import os
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from ..config import RunConfig
from ..data import AttributeSpec
from ..losses import MSSSIMSettings
from ..models.factorised import LIMIT, is_limit
from ..training.modules import Modules
from ..training.precision import AMP_CHOICES
from .features import FeatureSet, Pipeline

SPLITS = ("val", "test", "all")
DEFAULT_REPEATS = (1, 8, LIMIT)

# what each --budget caps; "full" is the dataclass defaults below (the judge's budget), "quick" a screen
BUDGETS: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {"recon_epochs": 12, "recon_extend": 0, "attr_epochs": 20, "patience": 3, "max_train_images": 3000,
              "constant_steps": 60,
              "inversion_steps": 200, "bootstrap": 200, "limit_draws": 8},
}


def precision_settings(s: "AttackSettings") -> dict[str, Any]:
    """The attackers' precision as a stored record keeps it (nothing for float32: records written before the setting
    existed match a float32 judge, and a bf16 judge retrains them)."""
    return {} if s.amp == "none" else {"amp": s.amp}


def repeat_label(m: float) -> str:
    """How a repeat count is written in attack.json keys, tags and tables: ``1``, ``8``, ``inf``."""
    return "inf" if is_limit(m) else str(int(m))


def parse_repeat(value: str | float | int) -> float:
    """A repeat count from ``8``, ``inf`` (or math.inf); ValueError for anything below 1."""
    text = str(value).strip().lower()
    m = LIMIT if text in ("inf", "infinity") else float(text)
    if not m >= 1 or (not is_limit(m) and m != int(m)):
        raise ValueError(f"repeat counts must be whole numbers >= 1 or 'inf', got {value!r}")
    return m if is_limit(m) else int(m)


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class AttackSettings:
    """Budgets and options of an attack run (every value is recorded in attack.json).

    Learned attackers train until their validation loss stops improving (``patience`` epochs) on a
    held-out ``val_fraction`` of their own training data, for at most ``recon_epochs`` /
    ``attr_epochs`` epochs, and keep the best validation weights.
    """

    attackers: list[str] | None = None  # None: every registered attacker
    split: str = "test"  # evaluation split (all: every image of the evaluation data not used by the attackers)
    recon_epochs: int = 40  # max epochs of reconstruction attackers (their cap)
    # epochs a reconstruction attacker still improving at its cap may train beyond it (None: as many as the cap)
    recon_extend: int | None = None
    extend_min_delta: float = 0.005  # ... while each patience window lowers its best validation loss by this share
    attr_epochs: int = 60  # max epochs of attribute attackers
    patience: int = 5  # epochs without a better validation loss before stopping
    val_fraction: float = 0.15  # share of the attackers' training images held out for early stopping
    lr: float = 1e-3
    batch_size: int = 64
    eval_batch_size: int = 256
    recon_loss: str = "msssim"  # msssim = L(AR1) of training, or mse
    max_train_images: int | None = None  # seeded subset of the attackers' training split
    seeds: list[int] | None = None  # attacker seeds (best + spread reported); None: [seed]
    repeat: list[float] | None = None  # repeated-query counts for stochastic pipelines (LIMIT = inf); None: 1, 8, inf
    limit_draws: int = 16  # black-box path only: draws averaged to estimate the averaging limit (m = inf)
    fast: bool = True  # use a pipeline's declared prefix + noise tail when it passes its check (else black-box)
    warm_start: bool = True  # a learned attacker at m > 1 starts from its own fit at the next smaller m
    workers: int = 1  # attacker processes (0: automatic, one per CPU up to 4 on a CPU, 1 on a GPU)
    budget: str = "full"  # the preset the caps came from (recorded; see BUDGETS)
    mlp_hidden: int = 512
    constant_steps: int = 150  # Adam steps of the MS-SSIM-optimised constant image
    inversion_images: int = 16
    inversion_steps: int = 600
    inversion_lr: float = 0.05
    tv_weight: float = 0.2
    reid_images: int = 100
    reid_similarity: str = "msssim"  # msssim | mse
    grid_images: int = 8
    bootstrap: int = 500
    seed: int = 0
    device: str = "cpu"
    # precision of the learned attackers' forward passes: none (float32), bf16 (autocast; weights, optimiser and
    # losses stay float32) or auto (bf16 where the device computes it natively: 1.3-1.7x per step on an AVX512-BF16
    # CPU, every headline of a judge inside float32's interval, benchmarks/results/judge_precision_celeba_cpu.md);
    # resolved when the attack starts
    amp: str = "auto"

    def __post_init__(self) -> None:
        if self.recon_extend is None:
            self.recon_extend = self.recon_epochs
        if self.recon_extend < 0 or not 0 <= self.extend_min_delta < 1:
            raise ValueError(f"recon_extend must be >= 0 and extend_min_delta in [0, 1), got {self.recon_extend} and "
                             f"{self.extend_min_delta}")
        if self.repeat:  # "inf" from a YAML file or a command line reads as the averaging limit
            self.repeat = [parse_repeat(m) for m in self.repeat]

    @classmethod
    def from_budget(cls, budget: str = "full", **overrides: Any) -> "AttackSettings":
        """Settings of a budget preset (``full``: the defaults; ``quick``: smaller caps), ``overrides`` on top (None
        values are ignored)."""
        if budget not in BUDGETS:
            raise ValueError(f"attack budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        values = {**BUDGETS[budget], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(budget=budget, **values)

    def budget_record(self) -> dict[str, Any]:
        """The budget's name and every cap it sets, as used (an explicit option may have overridden a preset cap)."""
        caps = {f.name: getattr(self, f.name) for f in fields(self) if f.name in BUDGETS["quick"]}
        return {"name": self.budget, "caps": {k: (repeat_label(v) if isinstance(v, float) and is_limit(v) else v)
                                              for k, v in caps.items()}}

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (the averaging limit written as ``"inf"``)."""
        out = asdict(self)
        if out["repeat"] is not None:
            out["repeat"] = [repeat_label(m) if is_limit(m) else m for m in out["repeat"]]
        return out

    def worker_count(self) -> int:
        """Attacker processes to run: ``workers``, or (0) one per CPU up to 4 on a CPU device and 1 on a GPU."""
        if self.workers > 0:
            return self.workers
        if self.device not in ("cpu",) and not self.device.startswith("cpu"):
            return 1
        return max(1, min(4, cpu_count()))

    def attacker_seeds(self) -> list[int]:
        """The seeds every learned attacker is trained with."""
        return list(self.seeds) if self.seeds else [self.seed]

    def repeats(self, stochastic: bool) -> list[float]:
        """Repeated-query counts to evaluate (1 first, the limit last): [1] for a deterministic pipeline."""
        if not stochastic:
            return [1]
        wanted = self.repeat if self.repeat else list(DEFAULT_REPEATS)
        return sorted(set([1, *wanted]))

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if self.recon_loss not in ("msssim", "mse"):
            raise ValueError(f"attack recon_loss must be 'msssim' or 'mse', got {self.recon_loss!r}")
        if self.reid_similarity not in ("msssim", "mse"):
            raise ValueError(f"attack reid_similarity must be 'msssim' or 'mse', got {self.reid_similarity!r}")
        if self.split not in SPLITS:
            raise ValueError(f"attack split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        for name in ("recon_epochs", "attr_epochs", "inversion_steps", "inversion_images", "reid_images",
                     "grid_images", "bootstrap", "patience", "constant_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"attack {name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "eval_batch_size", "mlp_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"attack {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"attack val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.repeat:
            for m in self.repeat:
                parse_repeat(m)
        if self.limit_draws < 1:
            raise ValueError(f"attack limit_draws must be >= 1, got {self.limit_draws}")
        if self.workers < 0:
            raise ValueError(f"attack workers must be >= 0 (0: automatic), got {self.workers}")
        if self.budget not in BUDGETS:
            raise ValueError(f"attack budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"attack amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")


@dataclass
class AttackContext:
    """The frozen deployed run an attacker works against."""

    pipeline: Pipeline
    settings: AttackSettings
    msssim: MSSSIMSettings
    progress: bool = True

    @property
    def cfg(self) -> RunConfig:
        """The run's resolved config."""
        return self.pipeline.cfg

    @property
    def modules(self) -> Modules:
        """The run's frozen modules."""
        return self.pipeline.modules

    @property
    def device(self) -> str:
        """Where attackers train."""
        return self.pipeline.device

    @property
    def image_size(self) -> tuple[int, int]:
        """The run's input size (H, W); every reconstruction has exactly this size."""
        return int(self.cfg.data.image_size[0]), int(self.cfg.data.image_size[1])


@dataclass
class AttackData:
    """The feature sets of one attack: the attackers' fit and validation parts, the evaluation set, and what
    earlier attackers left for later ones (kept reconstructions of the query and validation-probe rows)."""

    train: FeatureSet  # the attackers' fit part (never an evaluation image)
    val: FeatureSet  # held-out part of the attackers' training data (early stopping, attacker's own choices)
    test: FeatureSet  # evaluation
    query_rows: np.ndarray  # test rows whose reconstructions are kept (grid, re-ID, inversion)
    val_probe_rows: np.ndarray  # val rows whose reconstructions are kept (inversion's start choice)
    private_specs: list[AttributeSpec]
    task_specs: list[AttributeSpec]
    classifier: nn.Module | None = None  # the deployed C (oracle floor)
    recon_query: dict[str, np.ndarray] = field(default_factory=dict)  # attacker -> uint8 [Q, H, W, 3]
    recon_val: dict[str, np.ndarray] = field(default_factory=dict)  # attacker -> uint8 [P, H, W, 3]


@dataclass
class Evaluation:
    """An attacker's result: a JSON-able record, plus kept reconstructions for reconstruction attackers."""

    record: dict[str, Any]
    query_images: np.ndarray | None = None  # uint8 [Q, H, W, 3], aligned with AttackData.query_rows
    val_images: np.ndarray | None = None  # uint8 [P, H, W, 3], aligned with AttackData.val_probe_rows


class Attacker(Protocol):
    """One attacker: ``fit`` on the attackers' training features, ``evaluate`` on the evaluation features.

    ``kind`` is ``attribute`` (record: ``{"results": {attribute: classification report}}``) or
    ``reconstruction`` (record: MS-SSIM/PSNR report; kept images in the :class:`Evaluation`). A
    ``floor`` attacker measures what is learnable without the defence's help (reported as a floor,
    never as the best attacker). An attacker that only applies to some pipelines may define
    ``unavailable(data) -> str | None``: the reason it is skipped (recorded in the notes), None to run.
    """

    name: str
    kind: str
    description: str
    floor: bool

    def settings(self, ctx: AttackContext) -> dict[str, Any]:
        """Settings that change this attacker's result (a stored result with other values is recomputed)."""
        ...

    def fit(self, data: AttackData, ctx: AttackContext, seed: int) -> dict[str, Any]:
        """Train on ``data.train`` (early stopping on ``data.val``); return the training record."""
        ...

    def evaluate(self, data: AttackData, ctx: AttackContext, seed: int) -> Evaluation:
        """Score on ``data.test``."""
        ...

    def state(self) -> tuple[nn.Module, dict[str, Any]] | None:
        """The fitted module and a JSON-able spec to rebuild it (None: nothing learned to save)."""
        ...


AttackerFactory = Callable[[], Attacker]


def attacker_seed(seed: int, *names: str) -> int:
    """A per-attacker seed that does not depend on which other attackers run or in which order."""
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2 ** 31)


Reconstruct = Callable[[torch.Tensor], torch.Tensor]
