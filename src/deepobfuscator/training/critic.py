"""A conditional critic of the noise-free mean (the ``hardened`` defence's term against averaged queries).

An attacker who averages many queries of one image sees the obfuscator's noise-free mean, so the mean itself must
say no more about the private attributes than the intended labels imply. Distance correlation and HSIC on a
batch are dominated by the mean's large-variance directions and miss the small, nonlinear ones a fresh attacker
finds (measured: they lower single-query leakage, not the averaging limit's). The critic is such an attacker: a
classifier (any :func:`~deepobfuscator.training.adversaries.build_adversary` architecture) that reads the mean
*and the intended labels* (one constant plane per intended class) and predicts the private attributes. It is
trained on detached means at every step and re-initialised on a schedule (it never goes stale); the obfuscator
minimises the cross-entropy from the class-conditional prior p(private | intended labels) (counted over the
batches seen) to the critic's prediction, which is smallest when the critic can do no better than that prior:
the mean then tells it nothing beyond the intended label. Unlike the paper's -BCE the objective is bounded, and
unlike the entropy objective it does not ask the mean to hide what the intended label itself implies.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.index import AttributeSpec
from ..dependence import label_matrix
from ..losses import attribute_loss, split_logits
from .adversaries import build_adversary, reinitialise


def class_planes(task: torch.Tensor, specs: list[AttributeSpec], hw: tuple[int, int]) -> torch.Tensor:
    """Intended labels ``[N, T]`` as one-hot constant planes ``[N, sum K, h, w]`` (K = classes per attribute)."""
    return label_matrix(task, [s.num_classes for s in specs])[:, :, None, None].expand(-1, -1, *hw)


class ConditionalCritic:
    """A critic of ``[N, C, h, w]`` means that also reads the intended labels, with the prior it is judged against."""

    def __init__(self, architecture: str, feature_shape: tuple[int, int, int], task_specs: list[AttributeSpec],
                 private_specs: list[AttributeSpec], width: float, fc_width: int | None, lr: float = 1e-3,
                 restart_every: int = 0, device: str = "cpu") -> None:
        ch, h, w = feature_shape
        self.task_specs, self.private_specs, self.hw = task_specs, private_specs, (h, w)
        n_planes = sum(s.num_classes for s in task_specs)
        n_out = sum(s.num_outputs for s in private_specs)
        self.model = build_adversary(architecture, (ch + n_planes, h, w), n_out, width, fc_width).to(device)
        self.lr, self.restart_every, self.steps = lr, restart_every, 0
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr)
        # counts[g, attribute] over the private classes, g = the joint intended class (mixed radix)
        self.radix = [s.num_classes for s in task_specs]
        groups = 1
        for k in self.radix:
            groups *= k
        self.counts = [torch.ones(groups, s.num_classes, device=device) for s in private_specs]  # add-one prior

    def group(self, task: torch.Tensor) -> torch.Tensor:
        """The joint intended class of each row, as one index ``[N]``."""
        cols = task.long().reshape(len(task), -1)
        index = torch.zeros(len(task), dtype=torch.long, device=task.device)
        for i, k in enumerate(self.radix):
            index = index * k + cols[:, i]
        return index

    def inputs(self, mean: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The mean with the intended labels' planes appended."""
        return torch.cat([mean, class_planes(task, self.task_specs, self.hw).to(mean.dtype)], 1)

    def step(self, mean: torch.Tensor, task: torch.Tensor, private: torch.Tensor, count: bool = True) -> float:
        """Count the batch into the prior (unless ``count`` is False: a further update on the same batch) and update
        the critic once on the detached mean; returns its loss."""
        if count:
            groups = self.group(task)
            cols = private.long().reshape(len(private), -1)
            for i, counts in enumerate(self.counts):
                counts.index_put_((groups, cols[:, i]), torch.ones(len(groups), device=counts.device), accumulate=True)
        self.model.train()
        self.model.requires_grad_(True)
        loss = attribute_loss(self.model(self.inputs(mean.detach(), task)), private, self.private_specs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        if self.restart_every and self.steps % self.restart_every == 0:
            reinitialise(self.model)
            self.optimizer = torch.optim.Adam(self.model.parameters(), self.lr)
        return loss.item()

    def prior(self, task: torch.Tensor) -> list[torch.Tensor]:
        """p(private class | intended classes) per attribute for each row, ``[N, K]``, from the counts so far."""
        groups = self.group(task)
        return [(c / c.sum(1, keepdim=True))[groups] for c in self.counts]

    def obfuscator_loss(self, mean: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Cross-entropy from the prior to the (frozen) critic's prediction on ``mean`` (gradients reach the mean),
        and its excess over the prior's entropy (the KL, 0 when the critic learns nothing beyond the label)."""
        self.model.eval()
        self.model.requires_grad_(False)
        logits = self.model(self.inputs(mean, task))
        total, entropy = mean.new_zeros(()), 0.0
        for block, spec, p in zip(split_logits(logits, self.private_specs), self.private_specs, self.prior(task)):
            log_q = (torch.stack([F.logsigmoid(-block[:, 0]), F.logsigmoid(block[:, 0])], 1) if spec.binary
                     else F.log_softmax(block, 1))
            total = total - (p * log_q).sum(1).mean()
            entropy += float(-(p * p.clamp(min=1e-12).log()).sum(1).mean())
        n = max(1, len(self.private_specs))
        return total / n, (float(total.detach()) - entropy) / n

