"""`deepobf report`: tables, figures and a self-contained HTML page, from fake fixtures and from real tiny runs."""
from __future__ import annotations

import base64
import io
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from deepobfuscator.methods import configure
from deepobfuscator.config import preset, save_config
from deepobfuscator.report.html import build_report
from deepobfuscator.report.results import load_result
from deepobfuscator.report.tables import (
    ablation_table, best_tradeoff, cost_table, lambda_table, reconstruction_table, tradeoff_table,
)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.external.append(str(a))


def assert_self_contained(html_path: Path, expected_images: int) -> None:
    """Every <img> is an embedded PNG that decodes; nothing is loaded from elsewhere."""
    text = html_path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    parser = _Images()
    parser.feed(text)
    parser.close()
    assert not parser.external
    assert len(parser.srcs) == expected_images
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()


def _ci(v: float, w: float = 0.05) -> list[float]:
    return [round(v - w, 4), round(v + w, 4)]


def _fake_run(root: Path, name: str, method: str, task_acc: float, priv_acc: float, msssim: float,
              **privacy) -> Path:
    """A run directory with a config and a hand-written FAKE attack.json (test data only)."""
    cfg = configure(preset("tiny"), method)
    for k, v in privacy.items():
        setattr(cfg.privacy, k, v)
    run = root / name
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    recon = {n: {"ms_ssim": msssim * f, "ms_ssim_ci95": _ci(msssim * f, 0.01), "psnr": 10 + 5 * msssim * f,
                 "psnr_ci95": _ci(10 + 5 * msssim * f, 0.3)} for n, f in (("mirror", 1.0), ("urec1", 0.9))}
    fake = {
        "dataset": "FAKE-TEST-DATA", "split": "test",
        "utility": {"Smiling": {"accuracy": task_acc, "accuracy_ci95": _ci(task_acc), "majority_rate": 0.52}},
        "privacy": {"Male": {"best_attacker": "vgg", "accuracy": priv_acc, "accuracy_ci95": _ci(priv_acc),
                             "majority_rate": 0.6, "per_attacker": {"vgg": {"accuracy": priv_acc}}}},
        "reconstruction": {"best_attacker": "mirror", **recon["mirror"], "per_attacker": recon},
        "reid": {"same_image": 0.5, "same_image_ci95": [0.3, 0.7], "same_person": None},
    }
    (run / "attack.json").write_text(json.dumps(fake))
    pixels = (np.random.default_rng(len(name)).random((24, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(run / "recon_grid.png")
    return run


def test_report_from_fake_attack_results(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    dirs = [
        _fake_run(runs, "enc", "encoder", 0.90, 0.95, 0.60),
        _fake_run(runs, "dp", "dp", 0.60, 0.62, 0.10),
        _fake_run(runs, "do1", "deepobfuscator", 0.88, 0.70, 0.20, lambda1=1.0),
        _fake_run(runs, "do10", "deepobfuscator", 0.85, 0.61, 0.18, lambda1=10.0),
        _fake_run(runs, "rec", "deepobfuscator", 0.89, 0.93, 0.21, lambda1=1.0, defend="reconstruction"),
        _fake_run(runs, "att", "deepobfuscator", 0.88, 0.66, 0.55, lambda1=1.0, defend="attributes"),
    ]
    results = [load_result(d) for d in dirs]
    assert [r.label for r in results[:4]] == ["Encoder", "DP ε=0.5", "DeepObfuscator λ1=1", "DeepObfuscator λ1=10"]
    trade = tradeoff_table(results)
    assert len(trade.rows) == 6 and all(str(d) in {row[-1] for row in trade.rows} for d in dirs)
    assert any("0.850 [0.800, 0.900]" in cell for row in trade.rows for cell in row)  # number with its interval
    (_, best, leak, ref, what), = best_tradeoff(results)  # margin 3 points below the Encoder's 0.90
    assert (best.name, what, ref) == ("att", "Encoder", 0.90) and leak == pytest.approx(0.66 - 0.6)
    (_, best, _, _, _), = best_tradeoff(results, margin=0.05)  # now DeepObfuscator lambda1=10 (0.85) is in
    assert best.name == "do10"
    (_, best, _, _, _), = best_tradeoff([r for r in results if r.name != "enc"], margin=0.0)
    assert best.name == "rec"  # no Encoder: the margin is measured from the best run (0.89)
    assert [row[1] for row in lambda_table(results).rows] == ["1", "10"]
    recon = reconstruction_table(results)
    assert recon.columns[3:5] == ["mirror", "urec1"] and "dB" in recon.rows[0][3]
    ablation = ablation_table(results)
    assert [row[2] for row in ablation.rows] == ["none (Encoder)", "both", "attributes only", "reconstruction only"]

    files = build_report([runs], tmp_path / "report")
    assert_self_contained(files.html, expected_images=3 + 6)  # two scatters, lambda bars, one grid per run
    md = files.markdown.read_text()
    for ref in ("figures/tradeoff.png", "figures/reconstruction.png", "figures/lambda1.png", "grids/do10.png"):
        assert f"]({ref})" in md and (tmp_path / "report" / ref).is_file()
    assert "| Encoder |" in md and "reconstruction only" in md
    summary = json.loads(files.summary.read_text())
    assert len(summary["runs"]) == 6 and "attributes only" in summary["best_tradeoff"][0]
    assert {r["run"] for r in summary["runs"]} == {"enc", "dp", "do1", "do10", "rec", "att"}  # relative paths
    assert str(runs) not in md


def test_report_reads_schema_2_floors_and_ranks_by_leakage_above_the_larger_floor(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    enc = _fake_run(runs, "enc", "encoder", 0.90, 0.95, 0.60)
    a = _fake_run(runs, "a", "deepobfuscator", 0.89, 0.80, 0.2, lambda1=1.0)
    b = _fake_run(runs, "b", "deepobfuscator", 0.88, 0.85, 0.2, lambda1=10.0)
    # b's best attacker has the higher balanced accuracy, but its C leaks more too: less leakage above the floor
    for run, ba, oracle in ((enc, 0.93, 0.60), (a, 0.70, 0.55), (b, 0.72, 0.68)):
        attack = json.loads((run / "attack.json").read_text())
        attack["schema"] = 2
        attack["privacy"]["Male"].update({"balanced_accuracy": ba, "balanced_accuracy_ci95": _ci(ba),
                                          "oracle_floor": {"balanced_accuracy": oracle},
                                          "label_floor": {"balanced_accuracy": 0.57}})
        (run / "attack.json").write_text(json.dumps(attack))
    results = [load_result(d) for d in (enc, a, b)]
    assert results[2].leakage_above_floor("Male") == pytest.approx((0.72 - 0.68, "floor"))
    assert results[1].leakage_above_floor("Male") == pytest.approx((0.70 - 0.57, "floor"))  # the label floor, larger
    (_, best, leak, _, _), = best_tradeoff(results)
    assert best.name == "b" and leak == pytest.approx(0.04)
    row = next(row for row in tradeoff_table(results).rows if row[-1] == str(b))
    assert "oracle floor 0.680" in row[6] and "label floor 0.570" in row[6]
    files = build_report([runs], tmp_path / "report")
    assert "within 0.030 of the Encoder's (0.900)" in files.markdown.read_text()


def test_tradeoff_figure_draws_each_attribute_sets_own_label_floor(tmp_path: Path, monkeypatch) -> None:
    """Runs of several attribute sets in one panel once got one line at the mean of their label floors (0.617 for
    floors 0.573 and 0.629 and 0.650): a floor of none of them."""
    from matplotlib.axes import Axes

    from deepobfuscator.report.plots import tradeoff_scatter

    lines: list[tuple[str, str]] = []
    for kind in ("axhline", "axvline", "plot"):
        real = getattr(Axes, kind)

        def record(self, *args, _real=real, _kind=kind, **kwargs):
            lines.append((_kind, str(kwargs.get("label"))))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(Axes, kind, record)

    def judged(name: str, label_floor: float, task: list[str]) -> Path:
        run = _fake_run(tmp_path / "runs", name, "deepobfuscator", 0.85, 0.7, 0.3)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["data"]["task"] = task
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        attack = json.loads((run / "attack.json").read_text())
        attack["utility"] = {t: {"accuracy": 0.85, "accuracy_ci95": _ci(0.85), "majority_rate": 0.52} for t in task}
        attack["privacy"]["Male"].update({"balanced_accuracy": 0.7, "balanced_accuracy_ci95": _ci(0.7),
                                          "label_floor": {"balanced_accuracy": label_floor}})
        (run / "attack.json").write_text(json.dumps(attack))
        return run

    one_set = [load_result(judged(n, 0.573, ["Smiling"])) for n in ("a", "b")]
    assert tradeoff_scatter(one_set, tmp_path / "one.png").is_file()
    assert ("axhline", "label floor (0.573)") in lines
    lines.clear()
    two_sets = one_set + [load_result(judged("c", 0.629, ["High_Cheekbones"]))]
    assert tradeoff_scatter(two_sets, tmp_path / "two.png").is_file()
    assert not [label for kind, label in lines if kind == "axhline" and label.startswith("label floor")]
    assert ("plot", "label floor (each run's attribute set, under its marker)") in lines
    assert sum(kind == "axvline" and label.startswith("intended majority rate of ") for kind, label in lines) == 2


def test_cost_table_reads_training_and_judge_seconds(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    timed, untimed = _fake_run(runs, "timed", "encoder", 0.9, 0.9, 0.5), _fake_run(runs, "untimed", "dp", 0.6, 0.6, 0.1)
    (timed / "train_summary.json").write_text(json.dumps({"seconds": 200.0}))
    attack = json.loads((timed / "attack.json").read_text())
    attack.update({"timing": {"total_s": 330.0, "jobs_s": 500.0}, "budget": {"name": "quick"},
                   "settings": {"amp": "bf16", "attackers": ["vgg", "resrec"]}, "repeated": {"inf": {}}})
    (timed / "attack.json").write_text(json.dumps(attack))
    (untimed / "train_summary.json").write_text("{")  # being written: no training time, no error
    (timed / "train_summary.json").write_text(json.dumps({"seconds": 200.0, "stalled": ["Smiling"]}))
    rows = {row[-1]: row for row in cost_table([load_result(timed), load_result(untimed)]).rows}
    assert rows[str(timed)][3:10] == ["200", "330", "500", "2.5x", "quick, attackers in bf16", "vgg, resrec", "1, inf"]
    assert rows[str(untimed)][3:10] == ["-", "-", "-", "-", "-", "every registered", "1"]
    repeated = {"Male": {"balanced_accuracy": 0.6, "label_floor": {"balanced_accuracy": 0.57},
                         "oracle_floor": {"balanced_accuracy": 0.59}}}
    attack["repeated"] = {"inf": {"privacy": repeated}}
    attack["privacy"]["Male"].update(balanced_accuracy=0.62, label_floor={"balanced_accuracy": 0.57},
                                     oracle_floor={"balanced_accuracy": 0.55})
    (timed / "attack.json").write_text(json.dumps(attack))
    result = load_result(timed)
    assert (result.floor("Male"), result.floor("Male", "inf"), result.floor("Male", "8")) == (0.57, 0.59, None)
    unjudged = _fake_run(runs, "unjudged", "noisy", 0.8, 0.8, 0.3)
    (unjudged / "attack.json").unlink()
    md = build_report([runs], tmp_path / "report").markdown.read_text()
    assert "### Cost: training and the judge" in md
    assert "- timed: Smiling stayed at the majority rate in training" in md  # a stalled run is said loudly
    assert "- unjudged: no attack.json" in md and str(tmp_path) not in md  # runs named relative to their folder


def test_report_from_two_real_tiny_runs(tmp_path: Path, celeba_root: Path) -> None:
    """Two tiny runs trained and attacked for real by `deepobf sweep`, then `deepobf report`."""
    from deepobfuscator.cli import main

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "preset": "tiny", "data": str(celeba_root), "defaults": {"attributes": "Smiling/Male"},
        "attack": {"attackers": ["mirror", "linear"], "recon_epochs": 1, "attr_epochs": 1, "reid_images": 4,
                   "grid_images": 2, "bootstrap": 20},
        "runs": [{"method": "encoder"}, {"method": "deepobfuscator", "lambda1": 10}]}))
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--no-progress"]) == 0
    real = json.loads((out / "encoder-Smiling-vs-Male" / "attack.json").read_text())
    assert real["dataset"] == "celeba" and "ms_ssim" in real["reconstruction"]
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    html_path = tmp_path / "report" / "report.html"
    assert_self_contained(html_path, expected_images=3 + 2)  # tradeoff, reconstruction, lambda bars; two grids
    text = html_path.read_text()
    assert "DeepObfuscator λ1=10" in text and "encoder-Smiling-vs-Male" in text and str(out) not in text


def test_every_registered_method_has_its_own_style_and_others_a_stable_one() -> None:
    """Each method the project registers is drawn in a marker and colour of its own; a user's method gets a style
    that is the same in every process (Python's str hash is salted per process)."""
    import subprocess
    import sys

    from deepobfuscator.methods import METHODS
    from deepobfuscator.report.plots import _style

    styles = [_style(name) for name in METHODS.names()]
    assert len(set(styles)) == len(styles)
    code = "from deepobfuscator.report.plots import _style; print(_style('my_defence'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1
