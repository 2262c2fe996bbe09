"""Adversary-free dependence measures between a batch of features and labels (or images).

* :func:`distance_correlation`: sample distance correlation (Szekely et al. 2007), in [0, 1]; NoPeek uses it
  between raw images and features.
* :func:`unbiased_dcor2`: the bias-corrected squared distance correlation (about 0 when independent even on
  a small batch); the ``dcor`` measure of the within-class penalty.
* :func:`hsic`: normalised debiased HSIC (debiased centred kernel alignment) with Gaussian kernels, bandwidth
  by the median heuristic.
* :func:`within_class_dependence`: either measure between features and the private labels computed
  *separately within each intended-label class* and averaged (weighted by class size), so the part of the
  private attribute that the intended one implies (e.g. Male given Smiling) is not penalised;
  :func:`conditional_dependence` does the same against any target batch (hardened's image term: everything
  about the image beyond the intended label).
* :func:`within_class_spread`: the share of the features' variance that lies *within* the intended-label classes
  (1 - the between-class share, a Fisher ratio). Driving it to 0 makes the features a function of the intended
  label alone, so they carry nothing about the face or any private attribute beyond what the label implies; unlike
  the dependence measures it needs no private labels and no small-sample estimate of a dependence.
* :class:`RowBank`: the last N rows of earlier batches (detached), so a penalty's estimate can run on the batch plus
  the bank: a within-class dependence of 64-dimensional features estimated on 16-32 rows per class has little
  power, on a thousand it has much more; gradients still flow through the current batch's rows only.
Everything is differentiable with respect to the features.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Measure = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``x`` ``[N, D]``."""
    sq = x.pow(2).sum(1)
    # squared distances, then a tiny floor inside the root: the gradient at zero distance stays finite
    return torch.sqrt((sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp(min=0.0) + 1e-12)


def _centred_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred pairwise Euclidean distance matrix of the rows of ``x`` ``[N, D]``."""
    d = _pairwise_distances(x)
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def _check(x: torch.Tensor, z: torch.Tensor, name: str) -> None:
    if x.shape[0] != z.shape[0]:
        raise ValueError(f"{name}: batch sizes differ ({x.shape[0]} vs {z.shape[0]})")


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation dCor(x, z) in [0, 1] of two batches (rows flattened; biased upwards on small
    batches: about 0.6 for independent batches of 32)."""
    _check(x, z, "distance_correlation")
    a = _centred_distances(x.reshape(len(x), -1).double())
    b = _centred_distances(z.reshape(len(z), -1).double())
    dcov_xz = (a * b).mean().clamp(min=0.0)
    dvar = ((a * a).mean() * (b * b).mean()).clamp(min=1e-18)
    return torch.sqrt(dcov_xz / torch.sqrt(dvar) + 1e-12).to(z.dtype)


def _u_centre(m: torch.Tensor) -> torch.Tensor:
    """U-centred form (Szekely & Rizzo 2014) of a symmetric ``[N, N]`` matrix, zero diagonal; the inner product
    of two U-centred matrices / (N (N - 3)) is an unbiased estimate of dCov^2 (distances) or HSIC (kernels)."""
    n = len(m)
    off = 1.0 - torch.eye(n, dtype=m.dtype, device=m.device)
    m = m * off
    u = m - m.sum(0, keepdim=True) / (n - 2) - m.sum(1, keepdim=True) / (n - 2) + m.sum() / ((n - 1) * (n - 2))
    return u * off


def _unbiased_alignment(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<A, B> / (|A| |B|) of two U-centred matrices."""
    return (a * b).sum() / torch.sqrt(((a * a).sum() * (b * b).sum()).clamp(min=1e-18))


def _unbiased_measure(x: torch.Tensor, z: torch.Tensor, matrix: Callable[[torch.Tensor], torch.Tensor],
                      name: str) -> torch.Tensor:
    """Alignment of the U-centred ``matrix`` (distances or a kernel) of the flattened rows of ``x`` and ``z``."""
    _check(x, z, name)
    if len(x) < 4:
        raise ValueError(f"{name}: needs at least 4 rows, got {len(x)}")
    a = _u_centre(matrix(x.reshape(len(x), -1).double()))
    b = _u_centre(matrix(z.reshape(len(z), -1).double()))
    return _unbiased_alignment(a, b).to(z.dtype)


def unbiased_dcor2(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Bias-corrected squared distance correlation: about 0 for independent batches (can dip below), 1 when
    identical; unlike the plain sample dCor it does not reward a batch of 32 for merely being small. N >= 4."""
    return _unbiased_measure(x, z, _pairwise_distances, "unbiased_dcor2")


def _gaussian_gram(x: torch.Tensor) -> torch.Tensor:
    """Gaussian kernel matrix of the rows of ``x`` with the median pairwise distance as bandwidth."""
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp(min=0.0)
    off = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    bandwidth = off.detach().median().clamp(min=1e-12) if off.numel() else torch.ones((), dtype=x.dtype)
    return torch.exp(-d2 / bandwidth)


def hsic(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Normalised debiased HSIC (debiased CKA) with Gaussian kernels, median-heuristic bandwidth: about 0 for
    independent batches, 1 for identical ones. N >= 4."""
    return _unbiased_measure(x, z, _gaussian_gram, "hsic")


MEASURES: dict[str, Measure] = {"dcor": unbiased_dcor2, "hsic": hsic}


def label_matrix(labels: torch.Tensor, num_classes: int | Sequence[int] | None = None) -> torch.Tensor:
    """Integer labels ``[N]`` (or ``[N, A]``, one column per attribute) as a float one-hot matrix ``[N, sum K]``;
    K per column from ``num_classes`` (one count for every column, or one per column), else from the batch."""
    cols = labels.long().reshape(len(labels), -1)
    counts = (list(num_classes) if isinstance(num_classes, Sequence) else [num_classes] * cols.shape[1])
    parts = [F.one_hot(c, int(k or int(c.max().item()) + 1)) for c, k in zip(cols.T, counts, strict=True)]
    return torch.cat(parts, dim=1).float() if parts else torch.zeros(len(labels), 0)


def within_class_dependence(feats: torch.Tensor, private: torch.Tensor, task: torch.Tensor,
                            measure: str = "dcor", min_class: int = 8) -> torch.Tensor:
    """Dependence between ``feats`` and ``private`` labels within each ``task`` class, size-weighted mean.

    ``task`` groups rows by the joint value of its columns; groups with fewer than ``min_class`` rows, or in
    which the private labels are constant (nothing to depend on), are skipped; 0 when no group qualifies.
    """
    return conditional_dependence(feats, label_matrix(private).to(feats.device), task, measure, min_class)


def conditional_dependence(feats: torch.Tensor, target: torch.Tensor, task: torch.Tensor, measure: str = "dcor",
                           min_class: int = 8) -> torch.Tensor:
    """Dependence between ``feats`` and any ``target`` batch (one-hot labels, downsampled images, ...) within
    each ``task`` class, size-weighted mean; groups smaller than ``min_class`` or with a constant target are
    skipped (0 when none qualifies)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown dependence measure {measure!r} (known: {', '.join(MEASURES)})")
    _check(feats, target, "conditional_dependence")
    fn = MEASURES[measure]
    groups = task.long().reshape(len(task), -1)
    target = target.reshape(len(target), -1)
    flat = feats.reshape(len(feats), -1)
    total, weight = feats.new_zeros(()), 0
    for value in torch.unique(groups, dim=0):
        rows = (groups == value).all(1)
        n = int(rows.sum())
        if n < min_class or (target[rows] == target[rows][0]).all():
            continue
        total = total + n * fn(flat[rows], target[rows])
        weight += n
    return total / weight if weight else total


def within_class_spread(feats: torch.Tensor, task: torch.Tensor, min_class: int = 2) -> torch.Tensor:
    """Within-class share of the total variance of ``feats`` ``[N, ...]`` (rows flattened) in [0, 1].

    ``task`` groups rows by the joint value of its columns (``[N]`` or ``[N, T]``); the within-class scatter is
    summed over groups with at least ``min_class`` rows (a singleton group has no spread of its own), the total
    scatter is around the batch mean. 1 when the class means coincide, 0 when every row sits on its class mean.
    """
    _check(feats, task, "within_class_spread")
    flat = feats.reshape(len(feats), -1)
    total = (flat - flat.mean(0, keepdim=True)).pow(2).sum()
    groups = task.long().reshape(len(task), -1)
    within = flat.new_zeros(())
    for value in torch.unique(groups, dim=0):
        rows = (groups == value).all(1)
        if int(rows.sum()) >= min_class:
            part = flat[rows]
            within = within + (part - part.mean(0, keepdim=True)).pow(2).sum()
    return within / total.clamp(min=1e-12)


class RowBank:
    """A first-in-first-out store of the last ``size`` rows (features and their labels) of earlier batches, detached.

    :meth:`extend` returns the current batch with the stored rows appended (features of the bank carry no gradient)
    and then stores the batch; ``size`` 0 keeps nothing (the batch alone).
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"a row bank's size must be >= 0, got {size}")
        self.size = size
        self.rows: list[torch.Tensor] = []

    def __len__(self) -> int:
        return int(self.rows[0].shape[0]) if self.rows else 0

    def extend(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tensors`` (same first dimension) with the bank's rows appended; the batch is then stored."""
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("RowBank.extend: tensors differ in their number of rows")
        if self.size == 0:
            return tensors
        if self.rows and any(b.shape[1:] != t.shape[1:] for t, b in zip(tensors, self.rows)):
            raise ValueError("RowBank.extend: row shapes changed between batches")
        out = tensors if not self.rows else tuple(torch.cat([t, b.to(t.device)]) for t, b in zip(tensors, self.rows))
        stored = tuple(t.detach() for t in out)
        self.rows = [b[:self.size].clone() for b in stored]
        return out
