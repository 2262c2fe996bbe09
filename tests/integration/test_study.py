"""Grids and searches on Optuna: workers sharing one storage (SQLite, PostgreSQL), a killed worker's trial retried,
an old sweep folder migrated, and `deepobf tune` returning a judged front."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from deepobfuscator.cli import main
from deepobfuscator.config import ConfigError, preset
from deepobfuscator.experiments import study as study_module
from deepobfuscator.experiments.sweep import STATUS_FILE, load_sweep, run_sweep, study_name
from deepobfuscator.experiments.tune import run_tune
from deepobfuscator.methods import train_run
from deepobfuscator.runs import RunDir

GRID = [{"method": "encoder", "seed": [0, 1, 2, 3]}]  # four tiny runs


def _sweep_file(tmp_path: Path, celeba_root: Path, runs: list, **extra) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"preset": "tiny", "data": str(celeba_root), "attack": False,
                                    "defaults": {"attributes": "Smiling/Male"}, "runs": runs, **extra}))
    return path


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=study_module.open_storage(storage)).get_trials()


def _each_point_once(storage: str, name: str, names: list[str]) -> list[optuna.trial.FrozenTrial]:
    trials = _trials(storage, name)
    complete = Counter(t.params["run"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == Counter(names)  # every point exactly once
    assert not [t for t in trials if t.state == TrialState.FAIL]
    # a duplicate pick is pruned before it trains anything
    assert all(t.user_attrs.get("duplicate_of") is not None for t in trials if t.state == TrialState.PRUNED)
    return [t for t in trials if t.state == TrialState.COMPLETE]


def _grid_with_two_workers(tmp_path: Path, celeba_root: Path, storage: str | None) -> None:
    sweep = load_sweep(_sweep_file(tmp_path, celeba_root, GRID))
    out = tmp_path / "out"
    name = f"grid-{uuid.uuid4().hex[:8]}"
    outcome = run_sweep(sweep, out, progress=False, storage=storage, workers=2, study=name)
    names = [s.name for s in sweep.runs]
    assert {n: e["status"] for n, e in outcome.runs.items()} == {n: "done" for n in names}
    done = _each_point_once(storage or f"sqlite:///{out / 'study.db'}", name, names)
    assert {t.user_attrs["worker"].split(":")[1] for t in done} - {str(os.getpid())}  # trained in the workers
    for trial in done:
        run = RunDir(Path(trial.user_attrs["run_dir"]))
        assert run.is_complete()
        t = run.read_config().train
        stages = [json.loads(line)["stage"] for line in run.metrics.read_text().splitlines()]
        assert stages == ["pretrain"] * t.epochs_pretrain + ["attacker"] * t.epochs_attacker  # trained once


def test_two_workers_share_a_sqlite_grid_and_run_each_point_once(tmp_path: Path, celeba_root: Path) -> None:
    _grid_with_two_workers(tmp_path, celeba_root, None)


def test_two_workers_share_a_postgresql_grid(tmp_path: Path, celeba_root: Path, postgres_url: str) -> None:
    _grid_with_two_workers(tmp_path, celeba_root, postgres_url)


def test_a_killed_worker_leaves_a_failed_trial_that_the_next_call_retries(tmp_path: Path, celeba_root: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = _sweep_file(tmp_path, celeba_root, [{"method": "encoder"}])
    out, storage = tmp_path / "out", f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    name = study_name(load_sweep(path))
    # a worker whose training never ends, killed while its trial runs
    hang = ("import time, deepobfuscator.experiments.sweep as s; s.train_run = lambda *a, **k: time.sleep(600); "
            "from deepobfuscator.cli import main; main(['sweep', %r, '--out', %r, '--no-progress'])" % (str(path),
                                                                                                      str(out)))
    env = {**os.environ, "DEEPOBF_STUDY_HEARTBEAT": "1", "DEEPOBF_STUDY_GRACE": "3"}
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-c", hang], env=env, stdout=subprocess.DEVNULL,
                              stderr=log.open("w"))
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "study.db").is_file():
                try:
                    # running, inside the objective (Optuna's heartbeat thread started before it)
                    if any(t.state == TrialState.RUNNING and "worker" in t.user_attrs
                           for t in _trials(storage, name)):
                        break
                except KeyError:
                    pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the worker never started its trial; its stderr:\n{log.read_text()[-3000:]}")
        time.sleep(2.5)  # two heartbeats recorded (Optuna never fails a trial that has none)
        worker.kill()
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
    monkeypatch.setattr(study_module, "HEARTBEAT_S", 1.0)
    monkeypatch.setattr(study_module, "GRACE_S", 3.0)
    time.sleep(5)  # the dead worker's heartbeat is older than the grace period now
    events: list[tuple[str, str]] = []
    outcome = run_sweep(load_sweep(path), out, progress=False, on_event=lambda n, e, d: events.append((n, e)))
    assert outcome.runs["encoder-Smiling-vs-Male"]["status"] == "done"
    trials = _trials(storage, name)
    dead = [t for t in trials if t.state == TrialState.FAIL]
    assert len(dead) == 1 and "error" not in dead[0].user_attrs  # failed by its missing heartbeat
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 1 and done[0].user_attrs.get("retry_of") == dead[0].number
    assert ("encoder-Smiling-vs-Male", "retry") in events
    assert RunDir(out / "encoder-Smiling-vs-Male").is_complete()


def test_an_old_sweep_folder_is_migrated_into_the_study(tmp_path: Path, celeba_root: Path) -> None:
    path = _sweep_file(tmp_path, celeba_root, [{"method": "encoder"}, {"method": "deepobfuscator", "lambda1": 2}])
    sweep, out = load_sweep(path), tmp_path / "out"
    done = out / "encoder-Smiling-vs-Male"
    train_run(sweep.config(sweep.runs[0]), done, progress=False)
    trained_at = RunDir(done).final.stat().st_mtime_ns
    (out / STATUS_FILE).write_text(json.dumps({"sweep": str(path), "out": str(out), "runs": {
        "encoder-Smiling-vs-Male": {"status": "done", "method": "encoder", "run": str(done)},
        "deepobfuscator-l1_2-Smiling-vs-Male": {"status": "failed", "method": "deepobfuscator", "error": "OOM"}}}))
    events: list[tuple[str, str, str]] = []
    outcome = run_sweep(sweep, out, progress=False, on_event=lambda n, e, d: events.append((n, e, d)))
    assert any(e == "migrated" and "2 run(s)" in d for _, e, d in events)
    assert not (out / STATUS_FILE).exists() and (out / f"{STATUS_FILE}.migrated").is_file()
    assert RunDir(done).final.stat().st_mtime_ns == trained_at  # the finished run is kept, not retrained
    assert {n: e["status"] for n, e in outcome.runs.items()} == {"encoder-Smiling-vs-Male": "done",
                                                                 "deepobfuscator-l1_2-Smiling-vs-Male": "done"}
    assert ("deepobfuscator-l1_2-Smiling-vs-Male", "retry", "trial 1 failed: OOM") in events
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / STATUS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="move it away"):
        run_sweep(sweep, broken, progress=False)


def test_tune_returns_a_front_of_trained_and_judged_runs(tmp_path: Path, celeba_root: Path, capsys) -> None:
    base = preset("tiny")
    base.method, base.data.root = "hardened", str(celeba_root)
    base.params = {"audit": False}
    attack = {"attackers": ["linear", "constant", "mirror"], "attr_epochs": 1, "recon_epochs": 1, "reid_images": 4,
              "grid_images": 2, "bootstrap": 10, "repeat": [1], "workers": 1}
    outcome = run_tune(base, tmp_path / "tune", trials=3, attack=attack, progress=False)
    assert outcome.trials == 3 and outcome.front
    for point in outcome.front:
        run = RunDir(point.run)
        assert run.is_complete() and (run.path / "quick" / "attack.json").is_file()
        assert (run.path / "attack.json").is_file() and point.judge == "full"  # the front is judged at full budget
        assert set(point.params) <= {"method.mu", "method.mu_image", "method.mu_spread", "model.bottleneck_sigma"}
        cfg = run.read_config()
        assert cfg.params["mu"] == pytest.approx(point.params["method.mu"])
        assert 0.0 <= point.intended_accuracy <= 1.0
    assert main(["report", "--storage", outcome.storage, "--study", outcome.study, "--out", str(tmp_path / "rep")]) == 0
    assert "3 finished trial run(s)" in capsys.readouterr().out
    assert (tmp_path / "rep" / "report.html").is_file()


def test_two_searches_in_one_folder_never_share_a_run(tmp_path: Path, celeba_root: Path) -> None:
    """Each study's trials train in their own folder: a second search (other attributes) into the same OUT once read
    the first search's trial-0000 back as its own (trained for the other attributes)."""
    attack = {"attackers": ["linear", "constant"], "attr_epochs": 1, "recon_epochs": 1, "reid_images": 4,
              "grid_images": 2, "bootstrap": 10, "repeat": [1], "workers": 1}
    tasks = {}
    for task in ("Smiling", "High_Cheekbones"):
        base = preset("tiny")
        base.method, base.data.root, base.data.task = "hardened", str(celeba_root), [task]
        base.params = {"audit": False}
        outcome = run_tune(base, tmp_path / "tune", trials=1, attack=attack, final_judge=False, progress=False)
        (point,) = outcome.front
        assert point.run.parent == tmp_path / "tune" / outcome.study
        tasks[task] = RunDir(point.run).read_config().data.task
    assert tasks == {"Smiling": ["Smiling"], "High_Cheekbones": ["High_Cheekbones"]}


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads child processes from /proc")
def test_a_sweep_killed_alone_stops_its_workers(tmp_path: Path) -> None:
    """SIGTERM to the sweep process (not its group) once left its workers training, orphaned."""
    import signal
    import subprocess
    import sys
    import time

    script = ("from deepobfuscator.experiments.study import spawn_workers\nimport time\n"
              "spawn_workers(time.sleep, (120,), 2)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:  # the two workers (the resource tracker is a child too)
        workers = [c for c in _children(parent.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        time.sleep(0.2)
    assert len(workers) == 2
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) != 0
    time.sleep(0.5)
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in
                Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0]]


def test_a_storage_another_process_is_creating_opens_after_its_schema_exists(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy

    real, calls = optuna.storages.RDBStorage, []

    def racing(url: str, **kwargs):  # the first open loses the race to create the tables (what sqlite raised)
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert isinstance(study_module.open_storage(url), real) and len(calls) == 2
    monkeypatch.setattr(optuna.storages, "RDBStorage",
                        lambda url, **kw: (_ for _ in ()).throw(sqlalchemy.exc.ArgumentError("bad URL")))
    with pytest.raises(ConfigError, match="cannot open it"):
        study_module.open_storage(url)
