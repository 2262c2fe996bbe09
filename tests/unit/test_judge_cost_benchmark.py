"""benchmarks/judge_cost.py's arithmetic: the least a judge could cost, and which records are a judge's own."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "judge_cost.py"


@pytest.fixture(scope="module")
def judge_cost():
    spec = importlib.util.spec_from_file_location("judge_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _decoder(seconds: float, epochs: int, fit_s: float) -> dict:
    return {"kind": "reconstruction", "seconds": seconds,
            "training": {"epochs": epochs, "seconds": fit_s, "patience": 5}}


def test_least_cost_stops_every_fit_at_its_first_chance(judge_cost) -> None:
    rows = {("resrec", "1"): _decoder(130.0, 20, 120.0),  # 6 s/epoch: 6 epochs = 36 s, plus 10 s overhead
            ("urec1", "8"): _decoder(40.0, 4, 40.0),      # stopped before patience + 1: as it ran
            ("vgg", "1"): {"kind": "attribute", "seconds": 25.0, "training": {
                "Male": {"epochs": 10, "seconds": 10.0, "patience": 5},       # 1 s/epoch -> 6
                "Heavy_Makeup": {"epochs": 12, "seconds": 12.0, "patience": 5}}},  # -> 6; overhead 3
            ("constant", "1"): {"kind": "reconstruction", "floor": True, "seconds": 7.0, "training": None}}
    text = judge_cost.least_cost(rows, train_s=50.0, workers=2)[0]
    assert "108 job-seconds (decoders 86 (ran 170), attribute attackers 15 (ran 25), other jobs 7 (ran 7))" in text
    assert "2.2x training" in text and "54 s wall, 1.1x training" in text  # 108 / 50; 108 / 2 workers / 50


def test_records_a_later_judge_replaced_are_not_a_judges_own(judge_cost) -> None:
    rows = {("mirror", "1"): {"seconds": 123.27}, ("mirror", "8"): {"seconds": 131.592}}
    own, replaced = judge_cost.own_rows(rows, {"mirror.s0": 141.563, "mirror@m8.s0": 131.592, "mirror.s1": 9.0})
    assert list(own) == [("mirror", "8")] and replaced == {("mirror", "1"): 141.563}
    assert judge_cost.own_rows(rows, {}) == (rows, {})  # a judge that recorded no job seconds: all its own
