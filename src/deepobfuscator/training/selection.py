"""Deploy stage 1's best validation epoch, not its last (early stopping by validation, for references).

A reference trained on L(C) alone (the Encoder) has nothing to trade utility against, so the epoch it should deploy is
the one that validates best: one unlucky last epoch (a set-1 Encoder fell from 0.909 to 0.761) must not make the
reference every defence is compared with. :class:`ValidationChoiceTrainer` keeps the weights of O and C at the
stage-1 epoch with the highest mean validation accuracy over the intended attributes (ties: the earlier epoch) in
``checkpoints/val_best.safetensors`` and, after the last stage-1 epoch, puts them back before anything else trains on
O (the run's diagnostic attackers, the final weights). The choice is written into that epoch's metrics record
(``deployed``), so it travels with the run and with the pretrain cache. Which rule applies is the method's parameter
``deploy`` (``best_val`` or ``last``).
"""
from __future__ import annotations

from typing import Any

from .checkpoint import file_metadata, load_modules, save_modules
from .trainer import Trainer

VAL_BEST = "val_best.safetensors"  # under checkpoints/
RULE = "best mean validation accuracy of the intended attributes in stage 1 (ties: the earlier epoch)"
CHOSEN = ("obfuscator", "classifier")


def validation_utility(record: dict[str, Any]) -> float:
    """Mean validation accuracy over the intended attributes of one metrics record."""
    acc = record.get("C_acc") or {}
    return sum(acc.values()) / len(acc) if acc else float("-inf")


def best_epoch(records: list[dict[str, Any]], stage: str = "pretrain") -> dict[str, Any] | None:
    """The record of ``stage`` with the highest :func:`validation_utility` (the earlier on ties); None if none."""
    best: dict[str, Any] | None = None
    for rec in records:
        if rec.get("stage") == stage and rec.get("split", "val") == "val" and "C_acc" in rec:
            if best is None or validation_utility(rec) > validation_utility(best):
                best = rec
    return best


class ValidationChoiceTrainer(Trainer):
    """:class:`Trainer` whose stage 1 deploys its best validation epoch when the method's ``deploy`` is ``best_val``."""

    @classmethod
    def cache_signature(cls, cfg: Any, stage: int) -> dict[str, Any]:
        """Stage 1 ends on other weights than plain pretraining when it chooses by validation."""
        return {"deploy": "best_val"} if cls.chooses(cfg) else {}

    @staticmethod
    def chooses(cfg: Any) -> bool:
        """Whether the run's method parameters ask for the best validation epoch."""
        return (cfg.params or {}).get("deploy", "last") == "best_val"

    def validate(self, stage: int, split: str = "val") -> dict[str, Any]:
        """The usual validation; in stage 1 also keep the best epoch's O and C and, after the last epoch, restore
        them (the record says which epoch is deployed)."""
        out = super().validate(stage, split)
        if stage != 0 or split != "val" or not self.chooses(self.cfg):
            return out
        epoch = self.position.epoch + 1
        current = {"stage": self.stages[0], "epoch": epoch, "split": "val", **out}
        earlier = [r for r in self.run.read_metrics() if r.get("stage") == self.stages[0] and r["epoch"] < epoch]
        best = best_epoch(earlier + [current])
        path = self.run.checkpoints / VAL_BEST
        modules = {k: getattr(self.modules, k) for k in CHOSEN}
        if best is current and self.sync.rank == 0:
            save_modules(modules, path, metadata={"epoch": str(epoch)})
        if epoch < self.epochs(0) or best is None:
            return out
        deployed = {"epoch": best["epoch"], "val_utility": validation_utility(best), "rule": RULE}
        if best is not current:
            if _saved_epoch(path) == best["epoch"]:
                load_modules(modules, path)
            else:  # the file belongs to another epoch (a run resumed across a kill): keep the last weights, say so
                deployed = {"epoch": epoch, "val_utility": validation_utility(current),
                            "rule": f"last epoch (the best epoch {best['epoch']}'s weights were not kept)"}
        out["deployed"] = deployed
        return out


def _saved_epoch(path: Any) -> int | None:
    if not path.is_file():
        return None
    value = file_metadata(path).get("epoch")
    return int(value) if value is not None else None
