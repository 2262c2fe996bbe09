"""A noisy information bottleneck on what the phone sends (the ``hardened`` defence's first mechanism).

After O's VGG blocks: a 1x1 convolution to ``k`` channels, optional average pooling by ``pool``, a
normalisation that fixes the signal's scale (``batchnorm``: BatchNorm without affine parameters, so the
obfuscator cannot shrink the noise by inflating the signal; ``tanh``: a bounded activation; ``none``),
then Gaussian noise of std ``sigma`` (fixed, or learned per channel when ``learn_sigma``; the variational
information-bottleneck KL term of :meth:`NoisyBottleneck.kl` then keeps it from collapsing).

With ``code`` > 0 the sent mean has no spatial capacity left: a small head (1x1 conv to ``code`` channels,
BatchNorm, ReLU, the pooling, then an MLP over the pooled map) computes ``k`` values per image, normalised, and
repeats them over every position of the sent map (so C, the attackers and the exports keep their shapes); the noise
is still drawn per position. What an attacker averaging unlimited queries can read is then ``k`` numbers, the
capacity one binary intended label needs per channel, instead of ``k * h * w``. The head is small by default
(``mlp``); ``vgg`` makes it C's architecture (VGG16 blocks 3-5 and two FC layers on O's unpooled features, ``k``
outputs): the phone then computes what a multi-class intended label needs (State Farm's ten behaviours), and sends
only ``k`` noisy values of it.

The noise is part of the deployed pipeline: it is drawn afresh on *every* call, in training and in eval
mode alike, so C trains on noisy features and every attacker sees noisy features. ``noise_enabled`` (or
the :func:`deterministic` context) switches it off only to check an exported graph's deterministic part.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
from torch import nn

from .factorised import Factorisation, GaussianTail
from .vgg import Obfuscator, VGGClassifier

NORMS = ("batchnorm", "tanh", "none")
CODE_HIDDEN = 128  # hidden units of the code head's MLP
CODE_HEADS = ("mlp", "vgg")  # the code head: the small default, or C's architecture on the phone
AUTO_HEAD = "auto"  # model.bottleneck_code_head: chosen from the intended attributes by :func:`auto_code_head`


def code_width(classes: int) -> int:
    """Values of the code for a ``classes``-class intended attribute: ``K - 1`` logit differences (1 when binary)."""
    return max(1, int(classes) - 1)


def prediction_outputs(classes: tuple[int, ...]) -> int:
    """C's outputs for intended attributes of ``classes`` classes each: one logit per binary attribute, K per K-class."""
    return sum(1 if k == 2 else k for k in classes)


def class_onehots(logits: torch.Tensor, classes: tuple[int, ...]) -> list[torch.Tensor]:
    """Per intended attribute, the one-hot ``[N, K]`` of the class C's ``logits`` predict (a binary attribute's class 1
    when its logit is positive). Comparisons only, so exported graphs keep static shapes."""
    hots, offset = [], 0
    for k in classes:
        if k == 2:
            positive = (logits[:, offset:offset + 1] > 0).to(logits.dtype)
            hots.append(torch.cat([1 - positive, positive], dim=1))
            offset += 1
        else:
            block = logits[:, offset:offset + k]
            hots.append((block == block.amax(dim=1, keepdim=True)).to(logits.dtype))
            offset += k
    return hots


def combination_index(hots: list[torch.Tensor], classes: tuple[int, ...]) -> torch.Tensor:
    """The index ``[N]`` of each row's class combination (the first attribute most significant) from its one-hots."""
    index = torch.zeros(len(hots[0]), dtype=torch.long, device=hots[0].device)
    for hot, k in zip(hots, classes):
        index = index * k + hot.argmax(dim=1)
    return index


def expansion_matrix(classes: tuple[int, ...], attribute: int) -> torch.Tensor:
    """``[K_a, P]`` 0/1 matrix mapping attribute ``attribute``'s one-hot to the ``P = prod(K)`` class combinations
    that contain its class (the product of every attribute's expanded one-hot is the combination's one-hot)."""
    combos = torch.arange(math.prod(classes))
    stride = math.prod(classes[attribute + 1:])
    of_combo = (combos // stride) % classes[attribute]
    return (of_combo[None, :] == torch.arange(classes[attribute])[:, None]).float()


class NoisyBottleneck(nn.Module):
    """1x1 conv to ``channels`` -> avg-pool by ``pool`` -> scale-fixing norm -> + N(0, sigma^2) per call.

    ``code`` > 0: ``depth`` x (3x3 conv to twice O's channels -> BatchNorm -> ReLU) -> 1x1 conv to ``code`` channels
    -> BatchNorm -> ReLU -> avg-pool -> MLP to ``channels`` values -> scale-fixing norm -> repeated over the ``sent_hw``
    map -> + N(0, sigma^2) per position and call. The 3x3 layers (C's first VGG block's width, same padding, no
    pooling) move depth onto the phone for intended labels a shallow head cannot compute (10 driver behaviours).
    ``code_head`` (a module from O's unpooled features to ``channels`` values, e.g. C's architecture) replaces that
    head: no conv, pooling or MLP of its own.
    """

    def __init__(self, in_channels: int, channels: int, pool: int = 1, norm: str = "batchnorm",
                 sigma: float = 1.0, learn_sigma: bool = False, code: int = 0,
                 sent_hw: tuple[int, int] | None = None, depth: int = 0, code_head: nn.Module | None = None,
                 prediction: tuple[int, ...] = ()) -> None:
        super().__init__()
        if code_head is not None and (not code or depth):
            raise ValueError(f"a code head module needs a code and no depth of its own, got code {code}, depth {depth}")
        prediction = tuple(int(k) for k in prediction or ())
        if prediction and (not code or min(prediction) < 2):
            raise ValueError(f"sending C's prediction needs a code (model.bottleneck_code > 0) and 2 or more classes per "
                             f"intended attribute, got code {code} and classes {list(prediction)}")
        self.prediction = prediction
        if channels < 1 or pool < 1:
            raise ValueError(f"bottleneck channels and pool must be >= 1, got {channels} and {pool}")
        if code < 0 or (code and (sent_hw is None or min(sent_hw) < 1)):
            raise ValueError(f"a bottleneck code needs code >= 1 and the sent map's size, got code {code} and "
                             f"sent_hw {sent_hw}")
        if depth < 0 or (depth and not code):
            raise ValueError(f"a bottleneck code depth needs depth >= 0 and a code, got depth {depth}, code {code}")
        if norm not in NORMS:
            raise ValueError(f"bottleneck norm must be one of {NORMS}, got {norm!r}")
        if sigma < 0 or (learn_sigma and sigma <= 0):
            raise ValueError(f"bottleneck sigma must be >= 0 (> 0 when learned), got {sigma}")
        self.channels, self.pool, self.norm_kind, self.code = int(channels), int(pool), norm, int(code)
        self.pooling = nn.AvgPool2d(self.pool) if self.pool > 1 else nn.Identity()
        self.whole_head = code_head is not None  # the head reads O's features itself (no conv or pooling before it)
        if self.whole_head:
            self.head = code_head
        elif self.code:
            h, w = sent_hw
            layers: list[nn.Module] = []
            width = in_channels
            for _ in range(int(depth)):  # C's first block's width: twice O's last channels
                layers += [nn.Conv2d(width, in_channels * 2, 3, padding=1), nn.BatchNorm2d(in_channels * 2), nn.ReLU()]
                width = in_channels * 2
            self.conv = nn.Sequential(*layers, nn.Conv2d(width, self.code, 1), nn.BatchNorm2d(self.code), nn.ReLU())
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.code * h * w, CODE_HIDDEN), nn.ReLU(),
                                      nn.Linear(CODE_HIDDEN, self.channels))
        else:
            self.conv = nn.Conv2d(in_channels, self.channels, 1)
        if self.code:
            # the code is repeated over the map by a product with ones: static shapes in exported graphs (int8
            # quantisation's shape inference rejects the dynamic Reshape/Expand a view would trace to)
            self.register_buffer("positions", torch.ones(1, 1, *sent_hw), persistent=False)
        batch_norm = nn.BatchNorm1d if self.code else nn.BatchNorm2d  # the code is [N, k] before its repetition
        self.norm = {"batchnorm": lambda: batch_norm(self.channels, affine=False),
                     "tanh": nn.Tanh, "none": nn.Identity}[norm]()
        log_sigma = torch.full((self.channels,), math.log(sigma) if sigma > 0 else -math.inf)
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.learn_sigma = bool(learn_sigma)
        self.has_noise = bool(learn_sigma or sigma > 0)  # a Python flag: traced/exported graphs keep the branch
        self.noise_enabled = True
        self.noise_scale = 1.0  # a training curriculum may lower it for a step; never saved (deployment: 1)
        if prediction:  # C's linear read-out and the class centroids: saved with the weights, set by calibrate_prediction
            self.register_buffer("readout_weight", torch.zeros(prediction_outputs(prediction), self.channels))
            self.register_buffer("readout_bias", torch.zeros(prediction_outputs(prediction)))
            self.register_buffer("centroids", torch.zeros(math.prod(prediction), self.channels))
            for i in range(len(prediction)):
                self.register_buffer(f"expand{i}", expansion_matrix(prediction, i), persistent=False)

    @property
    def sigma(self) -> torch.Tensor:
        """Per-channel noise std ``[k]``."""
        return self.log_sigma.exp()

    def normalised_code(self, feats: torch.Tensor) -> torch.Tensor:
        """The normalised code ``[N, k]`` (a bottleneck with a code): what the phone sends the mean of, unless it sends
        C's prediction."""
        if self.whole_head:
            return self.norm(self.head(feats))
        return self.norm(self.head(self.pooling(self.conv(feats))))

    def sent_code(self, code: torch.Tensor) -> torch.Tensor:
        """What the phone sends the mean of: the code, or with ``prediction`` in eval mode (the deployed pipeline) the
        centroid of the class combination C's linear read-out predicts from it (:meth:`calibrate_prediction`);
        training keeps the code, so the bottleneck epochs train what they always did."""
        if not self.prediction or self.training:
            return code
        hots = class_onehots(code @ self.readout_weight.t() + self.readout_bias, self.prediction)
        combo = hots[0] @ self.expand0
        for i in range(1, len(hots)):
            combo = combo * (hots[i] @ getattr(self, f"expand{i}"))
        return combo @ self.centroids

    @torch.no_grad()
    def calibrate_prediction(self, readout: nn.Linear, codes: torch.Tensor) -> dict[str, Any]:
        """Copy C's linear read-out (``readout``: C's layer on the position-averaged code, whose noise averaging over
        the sent map leaves it unchanged) and set each class combination's centroid to the mean of the normalised
        training ``codes`` ``[N, k]`` that C assigns to it. Where C's decisions are a linear map's, each class's region
        is convex, so it holds its centroid and C decodes every centroid it has seen to that class: C's noise-free
        prediction, with nothing within a class left. A combination C never predicts on ``codes`` gets the centroid of
        them all. Returns what was set."""
        if readout.in_features != self.channels or readout.out_features != len(self.readout_bias):
            raise ValueError(f"C's read-out maps {readout.in_features} values to {readout.out_features} logits; the "
                             f"prediction needs {self.channels} to {len(self.readout_bias)}")
        self.readout_weight.copy_(readout.weight)
        self.readout_bias.copy_(readout.bias)
        codes = codes.to(self.centroids)
        index = combination_index(class_onehots(codes @ self.readout_weight.t() + self.readout_bias, self.prediction),
                                  self.prediction)
        counts = torch.bincount(index, minlength=len(self.centroids))
        sums = torch.zeros_like(self.centroids).index_add_(0, index, codes)
        seen = counts > 0
        self.centroids.copy_(torch.where(seen[:, None], sums / counts.clamp(min=1)[:, None], codes.mean(0)))
        hots = class_onehots(self.centroids @ self.readout_weight.t() + self.readout_bias, self.prediction)
        decoded = combination_index(hots, self.prediction) == torch.arange(len(self.centroids), device=index.device)
        return {"codes": int(len(codes)), "combinations": int(len(self.centroids)), "seen": int(seen.sum()),
                "decoded_as_their_own": int((decoded & seen).sum())}

    def mean(self, feats: torch.Tensor) -> torch.Tensor:
        """The deterministic part: conv, pool, norm (the mean of what is sent); with a code, the code's ``k`` values
        (or C's predicted class's centroid) repeated over the pooled map."""
        if not self.code:
            return self.norm(self.pooling(self.conv(feats)))
        return self.sent_code(self.normalised_code(feats))[:, :, None, None] * self.positions

    def add_noise(self, mean: torch.Tensor) -> torch.Tensor:
        """``mean`` plus a fresh Gaussian draw with the per-channel std (nothing when noise is off)."""
        if not (self.noise_enabled and self.has_noise):
            return mean
        std = self.sigma.view(1, -1, 1, 1).to(mean.dtype)
        if self.noise_scale != 1.0:  # a Python float: exported graphs (scale 1) keep the plain form
            std = std * self.noise_scale
        return mean + torch.randn_like(mean) * std

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """O's features -> noisy bottleneck features ``[N, k, h/pool, w/pool]``."""
        return self.add_noise(self.mean(feats))

    def kl(self, mean: torch.Tensor) -> torch.Tensor:
        """VIB term KL(N(mean, sigma^2) || N(0, 1)) summed over features, averaged over the batch."""
        var = self.sigma.view(1, -1, 1, 1).pow(2).to(mean.dtype)
        per = 0.5 * (mean.pow(2) + var - 1.0 - var.log())
        return per.flatten(1).sum(1).mean()


class BottleneckObfuscator(nn.Module):
    """O followed by a :class:`NoisyBottleneck`: the whole on-device half of a bottlenecked defence."""

    def __init__(self, front: Obfuscator, bottleneck: NoisyBottleneck) -> None:
        super().__init__()
        self.front, self.bottleneck = front, bottleneck
        self.out_channels = bottleneck.channels

    def feature_hw(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the sent features for an input of ``image_size``."""
        h, w = self.front.feature_hw(image_size)
        return h // self.bottleneck.pool, w // self.bottleneck.pool

    def mean(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic part (no noise) for ``images`` in [0, 1]."""
        return self.bottleneck.mean(self.front(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 1] -> noisy features (fresh noise on every call)."""
        return self.bottleneck(self.front(images))

    def noise_split(self) -> Factorisation | None:
        """What is sent = :meth:`mean` + Gaussian noise of the deployed per-channel std (None without noise)."""
        if not self.bottleneck.has_noise:
            return None
        return Factorisation(self.mean, GaussianTail(self.bottleneck.sigma.detach().float().cpu().clone()),
                             lambda: deterministic(self))


def bottleneck_of(module: nn.Module) -> NoisyBottleneck | None:
    """The noisy bottleneck inside an obfuscator, if it has one."""
    return module.bottleneck if isinstance(module, BottleneckObfuscator) else None


@contextlib.contextmanager
def deterministic(module: nn.Module) -> Iterator[None]:
    """Within the block, an obfuscator's bottleneck adds no noise (to check the deterministic part)."""
    bn = bottleneck_of(module)
    if bn is None:
        yield
        return
    before, bn.noise_enabled = bn.noise_enabled, False
    try:
        yield
    finally:
        bn.noise_enabled = before


AUTO_CHANNELS = -1  # model.bottleneck_channels: chosen from the intended attributes by :func:`auto_channels`


def auto_channels(class_counts: list[int]) -> int:
    """The bottleneck width a set of intended attributes needs (``class_counts``: classes per attribute): ``K - 1``
    channels for a K-class attribute, the dimension of its class-probability simplex (so 1 per binary attribute); at
    least 1. A rule of the code applied to the training data's attributes alone, never tuned per attribute set. (The
    earlier ``ceil(log2 K)``, the bits a label takes, cost State Farm's 10 behaviours 6 points at the same driver goal:
    benchmarks/results/statefarm_cpu.md.)"""
    return max(1, sum(code_width(k) for k in class_counts))


def code_head_name(code_head: str | None) -> str:
    """The code head a config names; none (runs written before the setting, methods that leave it unset) is ``mlp``."""
    return code_head or "mlp"


def auto_code_head(class_counts: list[int], code: int = 1, code_depth: int = 0) -> str:
    """The code head a set of intended attributes needs (``class_counts``: classes per attribute), for a code of
    ``code`` channels (0: no code, so no head to choose) and ``code_depth`` conv layers (only the MLP head has them).

    Binary attributes only: ``mlp``, the small head on O's features, one value per attribute (on CelebA's six attribute
    sets every goal met, with 0.6 MiB and 0.05 GFLOPs on the phone at celeba-cpu). Any attribute with more than two
    classes: ``vgg``, C's architecture on the phone, started from the warm epochs' head: its K - 1 values must carry the
    prediction's sufficient statistic, which the small head on O's shallow features does not compute (State Farm's 10
    behaviours: 0.51 and 0.63 with the MLP head, 0.74 and 0.83 with C's on two splits, the driver goal met by both;
    it costs the phone C's compute: 9.5 MiB and 0.16 GFLOPs at celeba-cpu, 360 MiB and 23 GFLOPs at the paper's
    size). A rule of the code applied to the training data's attributes alone, recorded under
    ``meta.code_head_rule``."""
    if not code or code_depth:
        return "mlp"
    return "vgg" if any(k > 2 for k in class_counts) else "mlp"


def whole_code_head(code: int, code_head: str | None) -> bool:
    """Whether the configured code head is a whole head on O's features (C's architecture, ``vgg``), the one a method
    may start from an Encoder-style head it trained first; the default ``mlp`` head starts at random."""
    if code_head == AUTO_HEAD:
        raise ValueError("model.bottleneck_code_head 'auto' is chosen when the run is created (auto_code_head)")
    return bool(code) and code_head_name(code_head) != "mlp"


def build_run_obfuscator(width: float, batch_norm: bool, channels: int = 0, pool: int = 1, norm: str = "batchnorm",
                         sigma: float = 0.0, learn_sigma: bool = False, code: int = 0,
                         image_size: tuple[int, int] | None = None, code_depth: int = 0,
                         code_head: str | None = "mlp", fc_width: int | None = None,
                         dropout: float = 0.5, prediction: tuple[int, ...] = ()) -> nn.Module:
    """O, wrapped in a noisy bottleneck when ``channels`` > 0 (a code head needs the input ``image_size``; ``code_depth``
    3x3 layers go before its 1x1 conv; ``code_head`` ``vgg``: the head is C's architecture, ``fc_width`` and
    ``dropout`` as C's, with ``channels`` outputs; ``prediction``: classes per intended attribute, whose predicted class
    (by C's read-out) the deployed phone sends as its centroid)."""
    front = Obfuscator(width, batch_norm)
    code_head = code_head_name(code_head)
    if code_head == AUTO_HEAD:
        raise ValueError("model.bottleneck_code_head 'auto' is chosen when the run is created; build from the run's "
                         "config.yaml, which records the head it chose")
    if code_head not in CODE_HEADS:
        raise ValueError(f"model.bottleneck_code_head must be one of {CODE_HEADS}, got {code_head!r}")
    if code_depth and not code:
        raise ValueError("model.bottleneck_code_depth needs a code head (model.bottleneck_code > 0)")
    if code_head != "mlp" and (not code or code_depth):
        raise ValueError(f"model.bottleneck_code_head {code_head!r} needs a code (model.bottleneck_code > 0) and no "
                         "model.bottleneck_code_depth (the head has its own depth)")
    if not channels:
        if code:
            raise ValueError("model.bottleneck_code needs a bottleneck (model.bottleneck_channels; the hardened method "
                             "has one by default)")
        return front
    sent_hw = None
    if code:
        if image_size is None:
            raise ValueError("a bottleneck code needs the input image size")
        h, w = front.feature_hw(tuple(image_size))
        sent_hw = (h // pool, w // pool)
    head = (VGGClassifier(front.out_channels, front.feature_hw(tuple(image_size)), channels, width, fc_width=fc_width,
                          batch_norm=batch_norm, dropout=dropout) if whole_code_head(code, code_head) else None)
    return BottleneckObfuscator(front, NoisyBottleneck(front.out_channels, channels, pool, norm, sigma, learn_sigma,
                                                       code, sent_hw, code_depth, head, prediction))
