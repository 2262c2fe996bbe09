"""`deepobf attack` end to end: outputs, resuming, clean errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepobfuscator.cli import main

QUICK = ["--epochs", "1", "--batch-size", "16", "--inversion-images", "2", "--inversion-steps", "2",
         "--reid-images", "6", "--grid-images", "3", "--bootstrap", "10", "--no-progress"]


def test_attack_cli_writes_results_and_resumes(trained_run: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    out = tmp_path / "report" / "attack.json"
    argv = ["attack", str(run), "--attackers", "mirror,inversion,linear", "--out", str(out), *QUICK]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| attacker | MS-SSIM" in printed and "Male" in printed
    result = json.loads(out.read_text())
    assert {"dataset", "split", "utility", "privacy", "reconstruction", "reid"} <= set(result)
    assert result["privacy"]["Male"]["best_attacker"] == "linear"
    assert result["reconstruction"]["best_attacker"] in {"mirror", "inversion"}
    assert result["settings"]["seed"] == 0 and result["msssim"]["win_size"] > 0
    assert out.with_suffix(".md").is_file() and (out.parent / "attack_recon_grid.png").is_file()
    stored = sorted((run / "attack").glob("*/mirror.s0.json"))
    assert len(stored) == 1
    mtime = stored[0].stat().st_mtime_ns
    assert main(argv) == 0  # resumed: the finished attacker's result is reused, not retrained
    assert stored[0].stat().st_mtime_ns == mtime
    assert main(argv + ["--retrain"]) == 0
    assert stored[0].stat().st_mtime_ns != mtime


def test_attack_cli_errors_are_clean(tmp_path: Path, trained_run: Path, capsys):
    assert main(["attack", str(tmp_path), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["attack", str(trained_run), "--attackers", "nope", "--no-progress"]) == 2
    assert "unknown attacker 'nope'" in capsys.readouterr().err
    assert main(["attack", str(trained_run), "--dataset", "lfw", "--no-progress"]) == 2
    assert "--data" in capsys.readouterr().err
