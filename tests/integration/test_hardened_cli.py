"""`deepobf baseline hardened` on real CelebA (tiny): trains every mechanism, is attacked and exported as deployed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from deepobfuscator.attacks.features import load_pipeline, obfuscate
from deepobfuscator.cli import main
from deepobfuscator.deploy.inspect import inspect_pixels, load_inspected_run
from deepobfuscator.methods import load_trained
from deepobfuscator.runs import RunDir

# --epochs caps every learned attacker; --repeat 2: the repeated-query attack a stochastic pipeline gets
TINY_ATTACK = ["--attackers", "vgg,mirror", "--epochs", "1", "--repeat", "1,2", "--reid-images", "4",
               "--grid-images", "2", "--bootstrap", "20", "--no-progress", "--threads", "1"]
SMALL_AUDIT = ["--set", "method.audit_images=32", "--set", "method.audit_val_images=16",
               "--set", "method.audit_epochs=1", "--set", "method.restart_every=2"]


@pytest.fixture(scope="module")
def hardened_run(tmp_path_factory: pytest.TempPathFactory, celeba_root: Path) -> Path:
    """One tiny hardened run with the ensemble (off by default), the penalties, auxiliary head and audit all on."""
    out = tmp_path_factory.mktemp("hardened") / "run"
    assert main(["baseline", "hardened", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out),
                 "--no-progress", "--set", "model.bottleneck_channels=2", "--set", "method.aux_epochs=1",
                 "--set", "method.adversaries=[vgg,resnet,mlp]", *SMALL_AUDIT]) == 0
    return out


def test_hardened_records_its_configuration_and_the_audit_choice(hardened_run: Path) -> None:
    cfg = yaml.safe_load((hardened_run / "config.yaml").read_text())
    assert cfg["method"]["name"] == "hardened"
    assert cfg["model"]["bottleneck_channels"] == 2 and cfg["model"]["bottleneck_sigma"] == 1.0
    assert cfg["method"]["adversaries"] == ["vgg", "resnet", "mlp"] and cfg["method"]["mu"] == 1.0
    records = [json.loads(line) for line in (hardened_run / "metrics.jsonl").read_text().splitlines()]
    audited = [r for r in records if "audit" in r]
    assert [(r["stage"], r["epoch"]) for r in audited] == [("pretrain", 1), ("adversarial", 1)]
    assert all(0.0 <= r["audit"]["leakage"] <= 1.0 for r in audited)
    selection = json.loads((hardened_run / "audit_selection.json").read_text())
    assert len(selection["candidates"]) == 2 and selection["selected"]["stage"] in ("pretrain", "adversarial")
    # the deployed weights (O and C) are the audit's choice; the other candidate's weights are removed
    chosen = selection["selected"]
    kept = sorted(p.name for p in (hardened_run / "checkpoints").glob("audit-*.safetensors"))
    assert kept == [f"audit-{chosen['stage']}-{chosen['epoch']}.safetensors"]
    final = load_file(str(hardened_run / "checkpoints" / "final.safetensors"))
    best = load_file(str(hardened_run / "checkpoints" / kept[0]))
    assert {k.split(".")[0] for k in best} == {"obfuscator", "classifier"}
    assert all(torch.equal(final[k], best[k]) for k in best)


def test_attacks_see_fresh_noisy_bottleneck_features(hardened_run: Path) -> None:
    cfg, modules = load_trained(RunDir(hardened_run))
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        a, b = obfuscate(cfg, modules, images), obfuscate(cfg, modules, images)
        mean = modules.obfuscator.mean(images)
    assert a.shape == (4, 2, 8, 8) and not torch.allclose(a, b)  # eval mode still draws noise, afresh
    assert (a - mean).std().item() == pytest.approx(1.0, rel=0.25)
    assert load_pipeline(RunDir(hardened_run)).detect_stochastic(images)  # the attack suite sees the noise itself
    assert main(["attack", str(hardened_run), *TINY_ATTACK]) == 0
    result = json.loads((hardened_run / "attack.json").read_text())
    assert result["method"] == "hardened" and "Male" in result["privacy"]
    assert result["stochastic"] and set(result["repeated"]) == {"2"}


def test_inspect_shows_what_the_phone_sends_with_fresh_noise(hardened_run: Path) -> None:
    run = load_inspected_run(hardened_run)
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    first, second = inspect_pixels(run, pixels), inspect_pixels(run, pixels)
    assert first.sent.shape == [2, 8, 8] and first.method == "hardened"
    assert first.sent.mosaic_png != second.sent.mosaic_png  # a fresh bottleneck draw per request, as deployed


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_checks_the_deterministic_part_and_keeps_the_noise_in_the_graph(hardened_run: Path, tmp_path: Path,
                                                                                fmt: str) -> None:
    out = tmp_path / fmt
    assert main(["export", str(hardened_run), "--format", fmt, "--out", str(out)]) == 0
    card = json.loads((out / "model-card.json").read_text())
    assert card["parity"]["obfuscator"]["max_abs_diff"] <= 1e-4
    assert card["parity"]["obfuscator"]["part"].startswith("deterministic")
    noise = card["parity"]["obfuscator_noise"]
    assert noise["fresh_per_call"] and np.allclose(noise["measured_std"], noise["sigma"], rtol=0.15)
    assert card["parity"]["classifier"]["max_abs_diff"] <= 1e-4


def test_export_int8_quantises_the_deterministic_part_and_appends_fresh_noise(hardened_run: Path,
                                                                              tmp_path: Path) -> None:
    import onnx

    from deepobfuscator.deploy.sessions import open_session, run_batched

    out = tmp_path / "q"
    assert main(["export", str(hardened_run), "--int8", "--out", str(out), "--calibration-images", "16"]) == 0
    card = json.loads((out / "model-card.json").read_text())
    assert set(card["files"]) == {"obfuscator", "classifier", "obfuscator_int8"}
    assert not (out / "obfuscator.mean.onnx").exists() and not (out / "obfuscator.mean.int8.onnx").exists()
    noise = card["parity"]["obfuscator_int8_noise"]
    assert noise["fresh_per_call"] and np.allclose(noise["measured_std"], noise["sigma"], rtol=0.15)
    ops = [n.op_type for n in onnx.load(str(out / "obfuscator.int8.onnx")).graph.node]
    assert "QuantizeLinear" in ops and ops[-3:] == ["RandomNormalLike", "Mul", "Add"]
    session = open_session(out / "obfuscator.int8.onnx")
    x = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    a, b = run_batched(session, x), run_batched(session, x)
    assert a.shape == (4, 2, 8, 8) and not np.allclose(a, b)
    assert set(card["int8"]["accuracy"]) >= {"fp32", "int8_obfuscator"}

@pytest.mark.parametrize("warm", [True, False])
def test_repeated_query_attackers_start_from_their_own_fit_at_the_smaller_count(hardened_run: Path, monkeypatch,
                                                                                  warm: bool) -> None:
    from deepobfuscator.attacks import AttackSettings, attribute, reconstruction, run_attack
    from deepobfuscator.attacks.saved import load_attacker

    starts: list[tuple[str, dict[str, torch.Tensor]]] = []
    for module in (reconstruction, attribute):
        def spy(model, *args, _real=module.fit_model, **kwargs):
            starts.append((kwargs["desc"], {k: v.clone() for k, v in model.state_dict().items()}))
            return _real(model, *args, **kwargs)
        monkeypatch.setattr(module, "fit_model", spy)
    settings = AttackSettings(attackers=["mlp", "mirror"], attr_epochs=1, recon_epochs=1, repeat=[2], batch_size=16,
                              bootstrap=10, grid_images=2, reid_images=4, mlp_hidden=16, warm_start=warm)
    out = hardened_run / f"warm-{warm}.json"
    run_attack(hardened_run, settings, out=out, retrain=True, progress=False)
    work = next((hardened_run / "attack").glob("*/fitted")).parent
    for desc, stem, key in (("attack mirror", "mirror", None), ("attack mlp Male", "mlp", "Male")):
        first, second = [state for d, state in starts if d == desc]
        fitted, _ = load_attacker(work, f"{stem}.s0")  # the single-query fit
        fitted_state = (fitted[key] if key else fitted).state_dict()
        record = json.loads((work / f"{stem}@m2.s0.json").read_text())
        if warm:  # the m = 2 fit begins where the m = 1 fit ended, and says so
            assert all(torch.equal(second[k], fitted_state[k]) for k in second)
            assert record["settings"]["warm_from"] == f"{stem}.s0"
        else:  # from scratch: the same initialisation as the m = 1 fit, not its result
            assert all(torch.equal(second[k], first[k]) for k in second)
            assert not all(torch.equal(second[k], fitted_state[k]) for k in second)
            assert "warm_from" not in record["settings"]
    assert json.loads(out.read_text())["settings"]["warm_start"] is warm
