"""`deepobf sweep`: grid expansion, skipping finished runs, surviving a failing run, resuming the attack step."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from deepobfuscator.experiments.sweep import STATUS_FILE, attack_settings, load_sweep, parse_sweep, run_sweep
from deepobfuscator.config import ConfigError
from deepobfuscator.runs import RunDir

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, celeba_root: Path, runs: list, **extra) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"preset": "tiny", "data": str(celeba_root), "defaults": {"attributes": "Smiling/Male"},
                                    "runs": runs, **extra}))
    return path


def fake_attack(calls: list[str], fail: set[str] = frozenset()):
    """An attack step that writes a clearly fake attack.json (test data only) and records its calls."""
    def attack(run_dir: Path, options: dict, progress: bool) -> dict:
        calls.append(run_dir.name)
        if run_dir.name in fail:
            raise RuntimeError(f"simulated attack failure on {run_dir.name}")
        fake = {"dataset": "FAKE-TEST-DATA", "split": "test", "utility": {}, "privacy": {}, "reconstruction": {},
                "reid": {}, "settings": dict(options)}  # the judge's settings, as the suite records them
        (run_dir / "attack.json").write_text(json.dumps(fake))
        return fake
    return attack


def test_grid_expansion_names_and_dedup(tmp_path: Path) -> None:
    raw = {"preset": "celeba-cpu", "data": "data/celeba", "defaults": {"attributes": "Smiling/Male"}, "runs": [
        {"method": "deepobfuscator", "lambda1": [1, 2, 5, 10],
         "attributes": ["Smiling/Male", "Smiling,High_Cheekbones/Male,Heavy_Makeup"]},
        {"method": "deepobfuscator", "lambda1": 1, "defend": ["reconstruction", "attributes", "both"]},
        {"method": ["encoder", "noisy"], "lambda1": [1, 10]},  # lambdas do not apply: one run each
        {"method": "dp", "epsilon": [0.1, 0.5]},
    ]}
    sweep = parse_sweep(raw, tmp_path / "s.yaml")
    names = [s.name for s in sweep.runs]
    assert len(names) == len(set(names)) == 8 + 2 + 2 + 2
    assert "deepobfuscator-l1_10-Smiling+High_Cheekbones-vs-Male+Heavy_Makeup" in names
    assert "deepobfuscator-l1_1-def_reconstruction-Smiling-vs-Male" in names
    assert "dp-eps0.1-Smiling-vs-Male" in names and "encoder-Smiling-vs-Male" in names
    assert sweep.data == str((tmp_path / "data" / "celeba").resolve())
    cfg = sweep.config(next(s for s in sweep.runs if s.name == "dp-eps0.1-Smiling-vs-Male"))
    assert cfg.method == "dp" and cfg.params["epsilon"] == 0.1 and cfg.train.epochs_adversarial == 0
    cfg = sweep.config(next(s for s in sweep.runs if "High_Cheekbones" in s.name and "l1_5" in s.name))
    assert cfg.data.task == ["Smiling", "High_Cheekbones"] and cfg.data.private == ["Male", "Heavy_Makeup"]
    assert cfg.privacy.lambda1 == 5 and cfg.privacy.lambda2 == 1
    with pytest.raises(ConfigError, match="lamda1"):
        parse_sweep({**raw, "runs": [{"method": "pan", "lamda1": 1}]}, tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match="unknown method"):
        parse_sweep({**raw, "runs": [{"method": "pann"}]}, tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match="attack option"):
        parse_sweep({**raw, "attack": {"recon_epoch": 1}}, tmp_path / "s.yaml")


def test_benchmark_sweep_file_parses() -> None:
    sweep = load_sweep(REPO / "benchmarks" / "sweep_celeba_cpu.yaml")
    methods = {s.method for s in sweep.runs}
    assert methods == {"encoder", "noisy", "dp", "hybrid", "deepobfuscator", "hardened"}
    assert sweep.preset == "celeba-cpu" and sweep.attack is not None
    assert sorted(s.settings.get("lambda1") for s in sweep.runs if s.method == "deepobfuscator") == [1, 10]
    settings = attack_settings(sweep.attack, "benchmark sweep")  # the judge it asks for is a valid one
    assert settings.budget == "full" and settings.repeat == [1, math.inf]
    assert {"resrec", "constant", "vgg", "known_noise", "oracle"} <= set(settings.attackers)
    others = load_sweep(REPO / "benchmarks" / "sweep_sets_celeba_cpu.yaml")  # the paper's defence on sets 2-6
    grid = {(tuple(s.task), tuple(s.private)) for s in load_sweep(REPO / "benchmarks" / "paper_grid.yaml").runs}
    assert {(tuple(s.task), tuple(s.private)) for s in others.runs} == grid - {(("Smiling",), ("Male",))}
    assert others.preset == sweep.preset and others.attack == sweep.attack  # the same judge as set 1's comparison
    for task, private in grid - {(("Smiling",), ("Male",))}:  # both of the paper's weights and Hybrid on every set
        on_set = [s for s in others.runs if (tuple(s.task), tuple(s.private)) == (task, private)]
        assert sorted(s.settings.get("lambda1") for s in on_set if s.method == "deepobfuscator") == [1, 10]
        assert "hybrid" in {s.method for s in on_set}
    assert {s.method for s in others.runs if s.task != ["Smiling", "High_Cheekbones"]} == {"deepobfuscator", "hybrid"}
    assert {s.method for s in others.runs} == {"deepobfuscator", "noisy", "dp", "hybrid"}  # set 6 has them all


def test_sweep_skips_finished_runs_and_survives_a_failing_one(tmp_path: Path, celeba_root: Path) -> None:
    path = _write(tmp_path, celeba_root, [
        {"method": "deepobfuscator", "lambda1": 1},  # shares stages 1-2 with lambda1 = 2
        {"method": "deepobfuscator", "lambda1": 2},
        {"method": "noisy", "attributes": "Smiling/No_Such_Attribute"},  # fails when its data is prepared
    ])
    sweep, out = load_sweep(path), tmp_path / "out"
    calls: list[str] = []
    events: list[tuple[str, str]] = []
    status = run_sweep(sweep, out, attack_fn=fake_attack(calls, fail={"deepobfuscator-l1_2-Smiling-vs-Male"}),
                       progress=False, on_event=lambda n, e, d: events.append((n, e)))
    runs = status.runs
    assert runs["deepobfuscator-l1_1-Smiling-vs-Male"]["status"] == "done"
    assert runs["noisy-Smiling-vs-No_Such_Attribute"]["status"] == "failed"
    assert "No_Such_Attribute" in runs["noisy-Smiling-vs-No_Such_Attribute"]["error"]
    failed_attack = runs["deepobfuscator-l1_2-Smiling-vs-Male"]
    assert failed_attack["status"] == "failed" and "simulated attack failure" in failed_attack["error"]
    assert not (out / STATUS_FILE).exists() and (out / "study.db").is_file()  # the study holds the status
    dobf = RunDir(out / "deepobfuscator-l1_2-Smiling-vs-Male")
    assert dobf.is_complete()  # trained before its attack failed
    restored = [json.loads((out / n / "pretrain_cache.json").read_text())["restored_stage"]
                for n in ("deepobfuscator-l1_1-Smiling-vs-Male", dobf.path.name)
                if (out / n / "pretrain_cache.json").is_file()]
    assert restored == [1]  # the two share stages 1-2 (whichever the grid ran second restored them)
    trained_at = dobf.final.stat().st_mtime_ns

    calls.clear()
    status = run_sweep(sweep, out, attack_fn=fake_attack(calls), progress=False,
                       on_event=lambda n, e, d: events.append((n, e)))
    assert ("deepobfuscator-l1_1-Smiling-vs-Male", "skipped") in events
    assert calls == ["deepobfuscator-l1_2-Smiling-vs-Male"]  # only the unfinished attack is redone...
    assert dobf.final.stat().st_mtime_ns == trained_at  # ...without retraining
    assert ("deepobfuscator-l1_2-Smiling-vs-Male", "retry") in events  # failed in the first call, retried here
    assert status.runs["deepobfuscator-l1_2-Smiling-vs-Male"]["status"] == "done"
    assert status.runs["noisy-Smiling-vs-No_Such_Attribute"]["status"] == "failed"  # retried, fails again


def test_a_grown_sweep_file_runs_its_new_point_without_retraining_the_old(tmp_path: Path, celeba_root: Path) -> None:
    """Adding a run to a sweep file is the common edit; an Optuna GridSampler's space cannot change within a study
    (the old code then failed trial after trial without end). The grown grid gets its own study."""
    from deepobfuscator.experiments.sweep import SweepRunner

    out, calls = tmp_path / "out", []
    path = _write(tmp_path, celeba_root, [{"method": "encoder"}])
    first = run_sweep(load_sweep(path), out, attack_fn=fake_attack(calls), progress=False)
    encoder = RunDir(out / "encoder-Smiling-vs-Male")
    assert first.study == "sweep-sweep" and encoder.is_complete()
    trained_at = encoder.final.stat().st_mtime_ns

    path = _write(tmp_path, celeba_root, [{"method": "encoder"}, {"method": "noisy"}])
    calls.clear()
    grown = run_sweep(load_sweep(path), out, attack_fn=fake_attack(calls), progress=False,
                      only=["noisy-Smiling-vs-Male"])  # as one adds a run: train only the new one
    assert grown.study.startswith("sweep-sweep-") and grown.study != first.study
    assert {name: run["status"] for name, run in grown.runs.items()} == {
        "encoder-Smiling-vs-Male": "pending", "noisy-Smiling-vs-Male": "done"}
    # the new study has not reached the Encoder, but the summary says its folder holds it finished
    assert grown.runs["encoder-Smiling-vs-Male"]["finished_in_folder"] is True
    assert calls == ["noisy-Smiling-vs-Male"] and encoder.final.stat().st_mtime_ns == trained_at
    again = run_sweep(load_sweep(path), out, attack_fn=fake_attack(calls), progress=False)
    assert again.study == grown.study and calls == ["noisy-Smiling-vs-Male"]  # the grown grid keeps its study
    assert {run["status"] for run in again.runs.values()} == {"done"}
    assert encoder.final.stat().st_mtime_ns == trained_at  # read back, not redone
    with pytest.raises(ConfigError, match=r"another grid.*added \['noisy-Smiling-vs-Male'\]"):
        SweepRunner(load_sweep(path), out, f"sqlite:///{out / 'study.db'}", name="sweep-sweep")


def test_a_changed_judge_in_the_file_judges_finished_runs_again_and_keeps_the_old(tmp_path: Path,
                                                                                  celeba_root: Path) -> None:
    """Finished runs were once skipped whatever judge the file now asked for, so a report mixed old judges in
    silently. A run's own ``attack`` options go over the file's."""
    out, calls, events = tmp_path / "out", [], []
    runs = [{"method": "encoder"}, {"method": "noisy", "attack": {"attr_epochs": 3}}]
    path = _write(tmp_path, celeba_root, runs, attack={"attr_epochs": 1})
    sweep = load_sweep(path)
    assert [sweep.attack_options(s)["attr_epochs"] for s in sweep.runs] == [1, 3]
    run_sweep(sweep, out, attack_fn=fake_attack(calls), progress=False)
    encoder, noisy = out / "encoder-Smiling-vs-Male", out / "noisy-Smiling-vs-Male"
    assert json.loads((noisy / "attack.json").read_text())["settings"]["attr_epochs"] == 3
    assert sorted(calls) == [encoder.name, noisy.name]

    calls.clear()
    run_sweep(load_sweep(path), out, attack_fn=fake_attack(calls), progress=False)
    assert calls == []  # the same judge: nothing to redo

    path = _write(tmp_path, celeba_root, runs, attack={"attr_epochs": 2})
    trained_at = RunDir(encoder).final.stat().st_mtime_ns
    outcome = run_sweep(load_sweep(path), out, attack_fn=fake_attack(calls), progress=False,
                        on_event=lambda n, e, d: events.append((n, e, d)))
    assert calls == [encoder.name]  # noisy's own attr_epochs = 3 still holds
    assert any(n == encoder.name and e == "rejudge" and "attr_epochs (judged 1, file asks 2)" in d
               for n, e, d in events)
    assert json.loads((encoder / "attack.json").read_text())["settings"]["attr_epochs"] == 2
    (kept,) = encoder.glob("attack.replaced-*.json")  # the old judge is kept, not overwritten
    assert json.loads(kept.read_text())["settings"]["attr_epochs"] == 1
    assert RunDir(encoder).final.stat().st_mtime_ns == trained_at  # judged again, not retrained
    assert outcome.runs[encoder.name]["status"] == "done"
    with pytest.raises(ConfigError, match="does not attack"):
        parse_sweep({"preset": "tiny", "attack": False, "defaults": {"attributes": "Smiling/Male"},
                     "runs": [{"method": "noisy", "attack": {"attr_epochs": 3}}]}, tmp_path / "s.yaml")


def test_a_trial_failing_before_it_takes_a_point_stops_the_sweep(tmp_path: Path, celeba_root: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every later trial would fail the same way: the sweep stops with the reason instead of failing trials forever."""
    import optuna

    from deepobfuscator.runs import RunError

    def broken(self, name, choices):
        raise ValueError("CategoricalDistribution does not support dynamic value space.")

    monkeypatch.setattr(optuna.trial.Trial, "suggest_categorical", broken)
    path = _write(tmp_path, celeba_root, [{"method": "encoder"}], attack=False)
    with pytest.raises(RunError, match="before it took a grid point.*dynamic value space"):
        run_sweep(load_sweep(path), tmp_path / "out", progress=False)
    trials = optuna.load_study(study_name="sweep-sweep", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials
    assert len(trials) == 1 and "dynamic value space" in trials[0].user_attrs["error"]


def test_sweep_cli_lists_runs_and_exits_nonzero_on_failure(tmp_path: Path, celeba_root: Path, capsys) -> None:
    from deepobfuscator.cli import main

    path = _write(tmp_path, celeba_root, [{"method": "encoder", "attributes": "Smiling/No_Such_Attribute"}],
                  attack=False)
    assert main(["sweep", str(path), "--list"]) == 0
    assert capsys.readouterr().out.strip() == "encoder-Smiling-vs-No_Such_Attribute"
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "No_Such_Attribute" in captured.err and "sweep: 1 failed;" in captured.out
    assert "finished in the folder" not in captured.out


def test_paper_grid_file_covers_every_method_on_the_six_sets() -> None:
    sweep = load_sweep(REPO / "benchmarks" / "paper_grid.yaml")
    sets = {(tuple(s.task), tuple(s.private)) for s in sweep.runs}
    assert len(sets) == 6 and len(sweep.runs) == 7 * 6
    assert {s.method for s in sweep.runs} == {"encoder", "noisy", "hardened", "deepobfuscator", "dp", "hybrid"}
    for spec in sweep.runs:  # one command and the same defaults for every set: nothing per set
        assert spec.overrides == [] and (spec.params == {} or set(spec.params) == {"epsilon"})
