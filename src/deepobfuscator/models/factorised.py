"""A stochastic pipeline declared as a deterministic prefix plus a noise tail.

What the phone sends is often ``post(prefix(x) + noise)``: the noisy bottleneck sends ``mean(x) + sigma * eps``,
Hybrid sends a fixed linear map of ``pca(x) + Laplace``. A module that knows this about itself declares it
(``noise_split()`` returning a :class:`Factorisation`), so that an evaluation can compute the expensive prefix once
per image and draw the cheap tail afresh whenever it needs a new sample, exactly as the black-box pipeline would.

A :class:`NoiseTail` also says what an attacker who averages ``m`` queries of the same image observes
(:meth:`NoiseTail.draw` with ``m``; ``m = LIMIT`` is the averaging limit, the noise-free prefix) and, for the
known-noise attacker, the log density of a noisy observation given a prefix (:meth:`NoiseTail.log_kernel`).
Nothing here is trusted blindly: :mod:`deepobfuscator.attacks.features` checks a declaration against the black-box
pipeline before using it.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol

import torch

LIMIT = math.inf
"""``m`` of the averaging limit: an attacker who averages unlimited queries of one image sees the prefix itself."""

Map = Callable[[torch.Tensor], torch.Tensor]


def is_limit(m: float) -> bool:
    """Whether ``m`` stands for unlimited averaging."""
    return math.isinf(m)


def _channel_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-channel ``values [C]`` shaped to broadcast against ``like [N, C, ...]``."""
    return values.to(like.device, like.dtype).view(1, -1, *([1] * (like.dim() - 2)))


class NoiseTail(Protocol):
    """The random part of a pipeline, acting on the prefix's output ("raw" space), then a fixed map ``post``."""

    name: str

    def draw(self, prefix: torch.Tensor, m: float = 1) -> torch.Tensor:
        """The average of ``m`` independent noisy draws around ``prefix`` in raw space (``m = LIMIT``: ``prefix``)."""
        ...

    def post(self, raw: torch.Tensor) -> torch.Tensor:
        """The deterministic map from raw space to what is sent (identity for most tails)."""
        ...

    def unpost(self, sent: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`post` on its image (sent features -> raw space)."""
        ...

    def log_kernel(self, observed: torch.Tensor, prefixes: torch.Tensor, m: float = 1) -> torch.Tensor:
        """``[Q, M]`` log density (up to a constant shared by all pairs) of observing the flattened raw ``observed
        [Q, D]`` as the ``m``-average of draws around each flattened prefix ``prefixes [M, D]``."""
        ...

    def variance(self, m: float = 1) -> torch.Tensor:
        """Per-channel variance of the ``m``-averaged noise ``[C]`` (0 at the limit)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (kind and parameters) for attack.json."""
        ...


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[Q, M]`` squared Euclidean distances (float64 accumulation: the expansion cancels badly in float32)."""
    a, b = a.double(), b.double()
    return (a.pow(2).sum(1, keepdim=True) - 2.0 * a @ b.T + b.pow(2).sum(1)[None, :]).clamp(min=0.0)


@dataclass
class GaussianTail:
    """``raw = prefix + sigma_c * eps`` with independent standard normal ``eps`` and a per-channel std ``sigma``.

    The mean of ``m`` independent draws is exactly one draw with std ``sigma / sqrt(m)``.
    """

    sigma: torch.Tensor  # [C], channel = dimension 1
    name: str = "gaussian"

    def _std(self, like: torch.Tensor, m: float) -> torch.Tensor:
        return _channel_view(self.sigma, like) / math.sqrt(m)

    def draw(self, prefix: torch.Tensor, m: float = 1) -> torch.Tensor:
        """``prefix + sigma / sqrt(m) * eps`` (``prefix`` at the limit)."""
        if is_limit(m):
            return prefix
        return prefix + torch.randn_like(prefix) * self._std(prefix, m)

    def post(self, raw: torch.Tensor) -> torch.Tensor:
        """Identity: the noisy map is what is sent."""
        return raw

    def unpost(self, sent: torch.Tensor) -> torch.Tensor:
        """Identity."""
        return sent

    def variance(self, m: float = 1) -> torch.Tensor:
        """``sigma^2 / m``."""
        return torch.zeros_like(self.sigma) if is_limit(m) else self.sigma.pow(2) / m

    def per_value_std(self, shape: tuple[int, ...], m: float) -> torch.Tensor:
        """The std of every value of one image's flattened raw features ``[D]`` (``shape`` without the batch)."""
        ones = torch.ones(1, *shape)
        return (ones * self._std(ones, m)).flatten()

    def log_kernel(self, observed: torch.Tensor, prefixes: torch.Tensor, m: float = 1) -> torch.Tensor:
        """Gaussian log density up to a constant: ``-||(y - mu) / std||^2 / 2`` with the per-value std."""
        if is_limit(m):
            raise ValueError("the Gaussian tail has no density at the averaging limit (no noise)")
        shape = (len(self.sigma), observed.shape[1] // len(self.sigma))
        std = self.per_value_std(shape, m).to(observed.device)
        return -0.5 * squared_distances(observed / std, prefixes / std)

    def describe(self) -> dict[str, Any]:
        """Kind and per-channel sigma."""
        return {"kind": self.name, "sigma": [round(float(s), 6) for s in self.sigma]}


def laplace_like(x: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Laplace(0, ``scale``) noise shaped like ``x`` (inverse CDF of a uniform draw)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs().clamp(max=0.5 - 1e-7))


@dataclass
class LaplaceTail:
    """``raw = prefix + Laplace(0, scale)`` per value, then a fixed map ``post`` (e.g. Hybrid's PCA inverse).

    ``m``-averages are drawn as the mean of ``m`` draws (exact); the known-noise attacker's kernel is the
    Laplace density for ``m = 1`` and the Gaussian with the same variance (``2 scale^2 / m``) beyond, which
    :meth:`describe` records.
    """

    scale: float
    post_map: Map | None = None
    unpost_map: Map | None = None
    channels: int = 1
    name: str = "laplace"

    def draw(self, prefix: torch.Tensor, m: float = 1) -> torch.Tensor:
        """The mean of ``m`` Laplace draws around ``prefix`` (``prefix`` at the limit)."""
        if is_limit(m):
            return prefix
        total = laplace_like(prefix, self.scale)
        for _ in range(int(m) - 1):
            total = total + laplace_like(prefix, self.scale)
        return prefix + total / int(m)

    def post(self, raw: torch.Tensor) -> torch.Tensor:
        """``post_map(raw)`` (identity when none)."""
        return self.post_map(raw) if self.post_map is not None else raw

    def unpost(self, sent: torch.Tensor) -> torch.Tensor:
        """``unpost_map(sent)`` (identity when none)."""
        return self.unpost_map(sent) if self.unpost_map is not None else sent

    def variance(self, m: float = 1) -> torch.Tensor:
        """``2 scale^2 / m`` for every channel."""
        value = 0.0 if is_limit(m) else 2.0 * self.scale ** 2 / m
        return torch.full((self.channels,), value)

    def log_kernel(self, observed: torch.Tensor, prefixes: torch.Tensor, m: float = 1) -> torch.Tensor:
        """Laplace log density (m = 1) or its variance-matched Gaussian (m > 1), up to a constant."""
        if is_limit(m):
            raise ValueError("the Laplace tail has no density at the averaging limit (no noise)")
        if m == 1:
            return -torch.cdist(observed.double(), prefixes.double(), p=1.0) / self.scale
        return -0.5 * squared_distances(observed, prefixes) / (2.0 * self.scale ** 2 / m)

    def describe(self) -> dict[str, Any]:
        """Kind, scale and how the kernel treats averages."""
        return {"kind": self.name, "scale": round(float(self.scale), 6),
                "kernel": "laplace at m=1, variance-matched gaussian for m>1"}


@dataclass
class Factorisation:
    """``send(x) == tail.post(tail.draw(prefix(x)))`` in distribution; ``noise_off()`` switches the black-box
    pipeline's own noise off (so its deterministic part can be compared with ``tail.post(prefix(x))``)."""

    prefix: Map
    tail: NoiseTail
    noise_off: Callable[[], ContextManager[None]] = field(default=contextlib.nullcontext)

    def after(self, front: Map) -> "Factorisation":
        """The same tail behind ``front`` (a deterministic map applied first)."""
        prefix = self.prefix
        return Factorisation(lambda x: prefix(front(x)), self.tail, self.noise_off)
