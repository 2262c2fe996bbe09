"""The end-of-training summary's warnings: an attribute that fell from its best validation epoch."""
from __future__ import annotations

from deepobfuscator.training.start import FALL_MARGIN, fallen_attributes, format_summary


def _records(values: list[float]) -> list[dict]:
    return [{"stage": "pretrain", "epoch": i + 1, "C_acc": {"Smiling": v}} for i, v in enumerate(values)]


def test_a_deployed_epoch_far_below_the_best_validation_epoch_is_named_and_warned() -> None:
    summary = {"method": "encoder", "seed": 0, "seconds": 1.0, "test_images": 800,
               "test": {"C_acc": {"Smiling": 0.761}}, "majority_rate": {"Smiling": 0.519}}
    fell = fallen_attributes(summary, _records([0.56, 0.82, 0.909, 0.899, 0.736]))
    assert fell == {"Smiling": {"test": 0.761, "best_val": 0.909, "stage": "pretrain", "epoch": 3}}
    text = format_summary({**summary, "fell": fell}, "runs/x")
    assert "WARNING: Smiling ends at 0.761" in text and "0.909 (pretrain epoch 3)" in text


def test_a_test_accuracy_within_the_margin_of_the_best_is_not_a_fall() -> None:
    summary = {"test": {"C_acc": {"Smiling": 0.909 - FALL_MARGIN + 0.001}}}
    assert fallen_attributes(summary, _records([0.5, 0.909, 0.88])) == {}
    assert fallen_attributes({"test": {}}, _records([0.9])) == {}  # no intended accuracy: nothing to compare
