"""`deepobf export | bench-device | client` end to end, and a client-to-server round trip on loopback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from deepobfuscator.cli import main
from deepobfuscator.deploy.service import BackgroundServer, create_app, load_service_model


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-export")
    assert main(["export", str(trained_run), "--int8", "--out", str(out), "--parity-images", "8",
                 "--calibration-images", "16"]) == 0
    return out


@pytest.fixture(scope="module")
def server_url(trained_run: Path) -> Iterator[str]:
    with BackgroundServer(create_app(load_service_model(trained_run))) as url:
        yield url


@pytest.fixture(scope="module")
def jpegs(celeba_root: Path) -> list[Path]:
    return sorted((celeba_root / "img_align_celeba").glob("*.jpg"))[:3]


def test_export_cli_reports_parity_and_int8_accuracy(exported: Path, capsys: pytest.CaptureFixture) -> None:
    card = json.loads((exported / "model-card.json").read_text())
    assert {"obfuscator", "classifier", "obfuscator_int8"} <= set(card["files"])
    assert card["int8"]["accuracy"]["int8_obfuscator"].keys() == {"Smiling"}


def test_bench_device_cli_prints_table6_rows(trained_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench-device", str(trained_run), "--runs", "3", "--warmup", "1", "--no-paper", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| run obfuscator" in printed and "int8" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "int8"] and all(r["threads"] == 1 for r in rows)


def test_client_matches_data_pipeline_preprocessing(jpegs: list[Path]) -> None:
    from deepobfuscator.data.cache import load_image as training_load
    from deepobfuscator.deploy.client import load_image

    for size in ((32, 32), (40, 24), (218, 178)):
        np.testing.assert_array_equal(load_image(jpegs[0], size), training_load(jpegs[0], size))


def test_client_round_trip_on_loopback(exported: Path, server_url: str, jpegs: list[Path], trained_run: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    from deepobfuscator.data.cache import load_image
    from deepobfuscator.methods import load_trained
    from deepobfuscator.runs import RunDir

    args = ["client", *map(str, jpegs), "--obfuscator", str(exported / "obfuscator.onnx"), "--url", server_url]
    assert main([*args, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    _, modules = load_trained(RunDir(trained_run))
    images = torch.from_numpy(np.stack([load_image(p, (32, 32)) for p in jpegs])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = torch.sigmoid(modules.classifier(modules.obfuscator(images))[:, 0]).numpy()
    np.testing.assert_allclose([r["predictions"]["Smiling"] for r in results], expected, atol=1e-5)
    for r, path in zip(results, jpegs):
        assert r["image_bytes"] == path.stat().st_size
        sizes = r["request_bytes"]
        assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert main([*args, "--transport", "int8"]) == 0
    printed = capsys.readouterr().out
    assert "Smiling=" in printed and "bytes per request" in printed and "sent int8" in printed


def test_standalone_client_runs_without_torch(exported: Path, server_url: str, jpegs: list[Path]) -> None:
    code = ("import sys; from deepobfuscator.deploy.client import main; "
            f"rc = main([{str(jpegs[0])!r}, '--obfuscator', {str(exported / 'obfuscator.int8.onnx')!r}, "
            f"'--url', {server_url!r}, '--transport', 'float16']); "
            "assert 'torch' not in sys.modules, 'client imported torch'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Smiling=" in done.stdout


def test_cli_errors_are_clean(trained_run: Path, exported: Path, jpegs: list[Path], tmp_path: Path, capsys) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert main(["client", str(jpegs[0]), "--obfuscator", str(exported / "obfuscator.onnx"), "--url", dead]) == 2
    assert "cannot reach the service" in capsys.readouterr().err
    assert main(["client", str(jpegs[0]), "--obfuscator", str(tmp_path / "missing.onnx"), "--url", dead]) == 2
    assert "missing.onnx: ONNX model not found" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_client_surfaces_the_services_error_message(server_url: str) -> None:
    from deepobfuscator.deploy.client import ClientError, post_features
    from deepobfuscator.deploy.wire import encode_features

    with pytest.raises(ClientError, match=r"/v1/predict: HTTP 415: Content-Type 'text/plain' not accepted"):
        post_features(server_url, b"hello", "text/plain")
    with pytest.raises(ClientError, match="HTTP 422: features of shape"):
        post_features(server_url + "/v1/predict", *encode_features(np.zeros((2, 3), np.float32)))
