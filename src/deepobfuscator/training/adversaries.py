"""An ensemble of attribute adversaries that does not go stale (the ``hardened`` defence's second mechanism).

Members of different architectures (registered classifiers such as ``vgg`` and ``resnet``, and ``mlp`` on
the flattened features) are trained on detached features; every ``restart_every`` calls of
:meth:`AdversaryEnsemble.step` one member (round robin) is re-initialised with a fresh optimiser, so the
obfuscator keeps facing an adversary that has not co-adapted with it. The obfuscator's objective is taken
against the strongest member on the batch (``against="max"``) or the members' mean, either the bounded
entropy objective (push every prediction to the uninformative one; default) or the paper's -BCE.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.index import AttributeSpec
from ..losses import attribute_loss, prediction_entropy_loss
from ..models import CLASSIFIERS, build_classifier

OBJECTIVES = ("entropy", "negative_bce")
TARGETS = ("max", "mean")


class FlatMLP(nn.Module):
    """An MLP on the flattened feature map (sees every position, unlike the pooled heads)."""

    def __init__(self, in_features: int, num_outputs: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_outputs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``[N, C, h, w]`` -> logits ``[N, num_outputs]``."""
        return self.net(features)


def build_adversary(name: str, feature_shape: tuple[int, int, int], num_outputs: int, width: float,
                    fc_width: int | None, batch_norm: bool = True) -> nn.Module:
    """A fresh adversary: ``mlp``, or any registered feature classifier (``vgg``, ``resnet``, ``linear``)."""
    ch, h, w = feature_shape
    if name == "mlp" and name not in CLASSIFIERS:
        return FlatMLP(ch * h * w, num_outputs)
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown adversary '{name}' (known: mlp, {', '.join(sorted(CLASSIFIERS))})")
    return build_classifier(name, ch, (h, w), num_outputs, width=width, fc_width=fc_width, batch_norm=batch_norm,
                            dropout=0.5)


def reinitialise(module: nn.Module) -> None:
    """Reset every submodule that can reset its parameters (and batch-norm statistics)."""
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):  # conv, linear, batch norm (its running statistics too)
            sub.reset_parameters()


@dataclass
class AdversaryEnsemble:
    """Attribute adversaries trained on detached features, restarted one at a time on a schedule."""

    members: list[nn.Module]
    names: list[str]
    specs: list[AttributeSpec]
    lr: float = 1e-3
    restart_every: int = 0  # 0: never
    objective: str = "entropy"
    against: str = "max"
    steps: int = 0
    restarts: list[tuple[int, int]] = field(default_factory=list)  # (step, member index) of each restart

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"adversary objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.against not in TARGETS:
            raise ValueError(f"adversary target must be one of {TARGETS}, got {self.against!r}")
        if len(self.members) != len(self.names) or not self.members:
            raise ValueError("an adversary ensemble needs at least one member and one name per member")
        self.optimizers = [torch.optim.Adam(m.parameters(), self.lr) for m in self.members]

    def to(self, device: str) -> "AdversaryEnsemble":
        """Move every member to ``device``."""
        for m in self.members:
            m.to(device)
        return self

    def restart(self, index: int) -> None:
        """Re-initialise member ``index`` and give it a fresh optimiser."""
        reinitialise(self.members[index])
        self.optimizers[index] = torch.optim.Adam(self.members[index].parameters(), self.lr)
        self.restarts.append((self.steps, index))

    def step(self, feats: torch.Tensor, private: torch.Tensor) -> dict[str, float]:
        """One update of every member on detached ``feats``; restarts one member when the schedule says."""
        feats = feats.detach()
        out = {}
        for i, (member, opt) in enumerate(zip(self.members, self.optimizers)):
            member.train()
            member.requires_grad_(True)
            loss = attribute_loss(member(feats), private, self.specs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out[f"L_adv_{self.names[i]}"] = loss.item()
        self.steps += 1
        if self.restart_every and self.steps % self.restart_every == 0:
            self.restart((self.steps // self.restart_every - 1) % len(self.members))
        return out

    def obfuscator_loss(self, feats: torch.Tensor, private: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The term O minimises: entropy objective (or -BCE) against the strongest member or the mean."""
        per_member, bces = [], []
        for member in self.members:
            member.eval()
            member.requires_grad_(False)
            logits = member(feats)
            bce = attribute_loss(logits, private, self.specs)
            bces.append(bce.detach())
            per_member.append(prediction_entropy_loss(logits, self.specs) if self.objective == "entropy" else -bce)
        stacked = torch.stack(per_member)
        if self.against == "max":  # the strongest adversary: lowest BCE on this batch
            loss = stacked[int(torch.stack(bces).argmin())]
        else:
            loss = stacked.mean()
        return loss, {"L_adv_min": float(torch.stack(bces).min())}
