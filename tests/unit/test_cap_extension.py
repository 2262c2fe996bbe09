"""Decoders that hit their epoch cap still improving train on (issue 19's budgets): the rule, the fit loop, the
records written before the rule existed, and what attack.json's notes say."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from deepobfuscator.attacks import AttackSettings
from deepobfuscator.attacks.base import AttackContext
from deepobfuscator.attacks.features import FeatureSet, Pipeline
from deepobfuscator.attacks.fit import fit_model, past_cap_stop
from deepobfuscator.attacks.reconstruction import LearnedReconstructor
from deepobfuscator.attacks.schedule import Job, stored_record
from deepobfuscator.attacks.suite import cap_notes
from deepobfuscator.config import MSSSIMConfig, preset
from deepobfuscator.losses import resolve_msssim


def _curve(losses: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "val_loss": v} for i, v in enumerate(losses)]


def _ctx(**settings) -> AttackContext:
    return AttackContext(Pipeline(preset("tiny"), None), AttackSettings(**settings),
                         resolve_msssim(MSSSIMConfig(), (32, 32)), progress=False)


def _fit(losses: list[float], cap: int, extend: int, min_delta: float = 0.01, patience: int = 2) -> dict:
    ctx = _ctx(patience=patience, batch_size=4)
    train = FeatureSet("t", "train", None, np.arange(8), np.ones((8, 3), np.float16))
    script = iter(losses)
    torch.manual_seed(0)
    return fit_model(nn.Linear(3, 1), train, train, lambda m, b: m(b.features).pow(2).mean(), ctx, 0, cap, "t",
                     validate=lambda m: float(next(script)), extend=extend, min_delta=min_delta)


# ------------------------------------------------------------------------------------------ the rule
def test_the_rule_below_at_and_past_the_cap():
    improving = _curve([1.0, 0.8, 0.6, 0.4])
    assert past_cap_stop(improving[:3], 4, 2, 4, 0.01) is None  # below the cap: plain early stopping decides
    assert past_cap_stop(improving, 4, 2, 0, 0.01) == "cap"  # no extension
    assert past_cap_stop(improving, 4, 2, 4, 0.01) is None  # still improving 33% per window: go on
    creeping = _curve([1.0, 0.8, 0.6, 0.599, 0.598])
    assert past_cap_stop(creeping, 5, 2, 4, 0.01) == "plateau"  # 0.3% in the last window, below 1%
    assert past_cap_stop(_curve([1.0] * 8), 4, 2, 4, 0.01) == "limit"
    assert past_cap_stop(_curve([1.0]), 1, 5, 1, 0.01) == "plateau"  # a window longer than the curve: no gain seen


def test_fit_trains_past_its_cap_while_improving_and_says_so():
    record = _fit([1.0, 0.8, 0.6, 0.45, 0.35, 0.3, 0.25, 0.2], cap=3, extend=3)
    assert record["epochs"] == 6 and record["stop"] == "limit" and record["extended"] == 3
    assert record["best_epoch"] == 6 and not record["stopped_early"]


def test_fit_stops_at_its_cap_on_a_plateau():
    record = _fit([1.0, 0.9, 0.899, 0.898, 0.5], cap=4, extend=10)
    assert record["epochs"] == 4 and record["stop"] == "plateau" and record["extended"] == 0


def test_fit_past_the_cap_still_stops_on_patience():
    record = _fit([1.0, 0.8, 0.6, 0.7, 0.65, 0.1], cap=3, extend=10, min_delta=0.0)
    assert record["epochs"] == 5 and record["stop"] == "patience" and record["best_epoch"] == 3


def test_a_fit_that_stops_early_is_the_same_with_or_without_extension():
    losses = [1.0, 0.5, 0.6, 0.7, 0.8]
    with_ext, without = _fit(losses, cap=5, extend=5), _fit(losses, cap=5, extend=0)
    assert with_ext["curve"] == without["curve"] and with_ext["epochs"] == 4 and with_ext["stop"] == "patience"
    assert "stop" not in without  # records without an extension keep their old shape


# ------------------------------------------------------------------------------------------ settings
def test_settings_default_the_extension_to_the_cap_and_quick_has_none():
    assert AttackSettings().recon_extend == AttackSettings().recon_epochs
    assert AttackSettings(recon_epochs=3).recon_extend == 3
    quick = AttackSettings.from_budget("quick")
    assert quick.recon_extend == 0 and quick.budget_record()["caps"]["recon_extend"] == 0
    with pytest.raises(ValueError, match="recon_extend"):
        AttackSettings(recon_extend=-1)
    ctx = _ctx(recon_epochs=3)
    wanted = LearnedReconstructor("mirror", "mirror", "").settings(ctx)
    assert wanted["extend"] == 3 and wanted["min_delta"] == ctx.settings.extend_min_delta
    assert "extend" not in LearnedReconstructor("mirror", "mirror", "").settings(_ctx(recon_extend=0))


# ------------------------------------------------------------------------------------------ stored records
def _legacy(work: Path, job: Job, wanted: dict, losses: list[float], cap: int, stopped_early: bool) -> Path:
    old = {k: v for k, v in wanted.items() if k not in ("extend", "min_delta")}
    record = {"name": job.name, "kind": "reconstruction", "settings": old, "ms_ssim": 0.4,
              "training": {"epochs": len(losses), "max_epochs": cap, "patience": 2, "stopped_early": stopped_early,
                           "curve": _curve(losses)}}
    (work / f"{job.stem}.json").write_text(json.dumps(record))
    np.save(work / f"{job.stem}.query.npy", np.zeros((1, 2, 2, 3), np.uint8))
    return work / f"{job.stem}.json"


@pytest.mark.parametrize("losses,cap,early,reused", [
    ([1.0, 0.5, 0.6, 0.7], 6, True, True),  # stopped early: the extension never acts
    ([1.0, 0.9, 0.899, 0.898], 4, False, True),  # crept at its cap: the rule stops there too
    ([1.0, 0.8, 0.6, 0.4], 4, False, False),  # still improving at its cap: the extension would train on
])
def test_records_from_before_the_extension(tmp_path: Path, losses, cap, early, reused):
    job = Job("mirror", 1, 0, "reconstruction")
    wanted = {"architecture": "mirror", "max_epochs": cap, "extend": cap, "min_delta": 0.01, "patience": 2, "seed": 0}
    path = _legacy(tmp_path, job, wanted, losses, cap, early)
    record = stored_record(tmp_path, job, wanted)
    assert (record is not None) == reused
    if reused:  # rewritten with today's settings, so the next judge matches it directly
        stored = json.loads(path.read_text())
        assert stored["settings"] == wanted and stored["training"]["stop"] == ("patience" if early else "plateau")
        assert stored_record(tmp_path, job, wanted) == stored
    other = {**wanted, "architecture": "urec1"}
    assert stored_record(tmp_path, job, other) is None  # another setting changed: never reused


def test_cap_notes_name_each_case():
    def rec(stop: str | None, early: bool, extended: int = 0) -> dict:
        training = {"stopped_early": early, **({"stop": stop, "extended": extended} if stop else {})}
        return {"kind": "reconstruction", "training": training}
    records = {"mirror": rec("plateau", False), "resrec": rec("patience", False, 7), "urec1": rec("limit", False, 40),
               "urec2": rec(None, False), "linear": {"kind": "attribute", "training": {}},
               "constant": {"kind": "reconstruction", "training": {"steps": 150}}}  # a floor: no epochs, no cap
    notes = " | ".join(cap_notes(records, AttackSettings()))
    assert "urec1, urec2 ran out of epochs (cap 40, limit 80)" in notes
    assert "mirror reached the cap (40 epochs) improving by less than 0.5%" in notes
    assert "resrec (7)" in notes and "urec1 (40)" in notes and "linear" not in notes and "constant" not in notes
    assert cap_notes({"resrec": rec("patience", True)}, AttackSettings()) == []
