"""`deepobf train` end to end on the shared CelebA subset (tiny preset, in-process)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

from deepobfuscator import __version__
from deepobfuscator.cli import main
from deepobfuscator.losses import make_noise_image


def train(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """Run ``deepobf train ARGS`` in-process; return (exit code, stdout, stderr)."""
    code = main(["train", "--no-progress", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, celeba_root: Path) -> tuple[Path, dict]:
    """One `deepobf train --preset tiny` run and its printed summary."""
    out = tmp_path_factory.mktemp("cli") / "tiny"
    code = main(["train", "--no-progress", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out)])
    assert code == 0
    return out, json.loads((out / "train_summary.json").read_text())


def test_train_writes_the_run_directory(cli_run: tuple[Path, dict], celeba_root: Path) -> None:
    out, summary = cli_run
    for name in ("config.yaml", "split.json", "noise.png", "checkpoints/final.safetensors", "metrics.jsonl",
                 "train_summary.json"):
        assert (out / name).is_file(), name
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    meta = cfg["meta"]
    assert meta["version"] == __version__ and "commit" in meta
    assert meta["msssim"]["win_size"] == 7 and meta["msssim"]["levels"] == 3  # fits 32 px
    assert meta["feature_shape"] == [8, 8, 8] and meta["split_source"] == "seeded"
    assert cfg["data"]["root"] == str(celeba_root.resolve()) and cfg["data"]["task"] == ["Smiling"]
    assert cfg["name"] == "tiny" and cfg["privacy"]["defend"] == "both"

    split = json.loads((out / "split.json").read_text())
    parts = [set(split[k]) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == 96 and set().union(*parts) == set(range(96))
    assert meta["split_sizes"] == {k: len(split[k]) for k in ("train", "val", "test")}

    noise = np.asarray(Image.open(out / "noise.png"))
    assert np.array_equal(noise, make_noise_image((32, 32), cfg["privacy"]["noise_seed"], cfg["privacy"]["noise_std"]))

    weights = load_file(str(out / "checkpoints" / "final.safetensors"))
    assert {k.split(".")[0] for k in weights} == {"obfuscator", "classifier", "reconstructor", "adversary"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == ["pretrain", "attacker", "adversarial"]
    assert summary["test_images"] == len(split["test"]) and "AR_msssim" in summary["test"]


def test_rerun_without_resume_fails_and_loses_nothing(cli_run: tuple[Path, dict], celeba_root: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out, _ = cli_run
    before = tree(out)
    code, _, err = train(capsys, "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--seed", "5")
    assert code == 2
    assert "already holds a run" in err and "--resume" in err and str(out) in err
    assert tree(out) == before


def test_resume_of_finished_run_succeeds_without_training(cli_run: tuple[Path, dict], celeba_root: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    out, summary = cli_run
    final = (out / "checkpoints" / "final.safetensors").read_bytes()
    metrics = (out / "metrics.jsonl").read_text()
    code, stdout, _ = train(capsys, "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--resume",
                            "--json")
    assert code == 0
    printed = json.loads(stdout)
    assert printed["test"] == summary["test"]
    assert (out / "checkpoints" / "final.safetensors").read_bytes() == final
    assert (out / "metrics.jsonl").read_text() == metrics


def test_resume_with_options_that_change_the_run_is_refused_and_loses_nothing(
        cli_run: tuple[Path, dict], celeba_root: Path, capsys: pytest.CaptureFixture) -> None:
    """--resume continues the recorded config: an option that would change it was once dropped without a word."""
    out, _ = cli_run
    before = tree(out)
    code, _, err = train(capsys, "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--resume",
                         "--seed", "5", "--set", "train.epochs_pretrain=7")
    assert code == 2 and "--resume continues" in err
    assert "train.epochs_pretrain (recorded 1, given 7)" in err and "train.seed (recorded 0, given 5)" in err
    assert tree(out) == before
    code, _, _ = train(capsys, "--out", str(out), "--resume", "--set", "train.epochs_pretrain=1")  # as recorded
    assert code == 0 and tree(out) == before


def test_the_end_of_training_reads_as_a_summary_with_the_next_commands(cli_run: tuple[Path, dict], celeba_root: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    out, summary = cli_run
    code, stdout, _ = train(capsys, "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--resume")
    assert code == 0 and "{" not in stdout  # a table, not the JSON dump (that is train_summary.json / --json)
    assert f"Run directory: {out}" in stdout
    assert f"deepobf attack {out}" in stdout and f"deepobf inspect {out}" in stdout
    assert "Smiling" in stdout and "majority rate" in stdout
    acc = summary["test"]["C_acc"]["Smiling"]
    assert f"{acc:.3f}" in stdout
    # the co-trained adversaries appear only as training diagnostics, never as privacy results
    line = next(l for l in stdout.splitlines() if "AC Male" in l)
    assert line.startswith("Training diagnostics, not privacy results")
    assert summary["stalled"] == [] or all(f"WARNING: {a}" in stdout for a in summary["stalled"])


def test_misspelt_task_exits_2_with_suggestion(tmp_path: Path, celeba_root: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "typo"
    code, _, err = train(capsys, "--preset", "tiny", "--data", str(celeba_root), "--out", str(out), "--task", "Smilling")
    assert code == 2
    assert "Smilling" in err and "did you mean" in err and "Smiling" in err
    assert not out.exists()  # nothing half-made to trip a corrected rerun
    code, _, err = train(capsys, "--preset", "tiny", "--out", str(out), "--set", "train.epoch_pretrain=1")
    assert code == 2 and "did you mean 'train.epochs_pretrain'" in err


@pytest.mark.parametrize("defend", ["reconstruction", "attributes"])
def test_single_defence_runs(tmp_path: Path, celeba_root: Path, capsys: pytest.CaptureFixture, defend: str) -> None:
    out = tmp_path / defend
    code, stdout, err = train(capsys, "--preset", "tiny", "--data", str(celeba_root), "--out", str(out),
                              "--defend", defend)
    assert code == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["privacy"]["defend"] == defend
    assert (out / "checkpoints" / "final.safetensors").is_file()
    assert "Run directory:" in stdout and "deepobf attack" in stdout
