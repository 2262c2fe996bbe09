"""The HTTP service hosting C, over real loopback HTTP (uvicorn in a thread, httpx as client)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepobfuscator.deploy import wire
from deepobfuscator.deploy.service import BackgroundServer, ServiceModel, create_app, load_service_model

MAX_BODY = 64 * 1024
MAX_BATCH = 16


@pytest.fixture(scope="module")
def reference(trained_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """O's features of real test images and the in-process C's P(Smiling) for them."""
    from deepobfuscator.data import images_to_tensor
    from deepobfuscator.losses import probabilities
    from deepobfuscator.methods import load_trained
    from deepobfuscator.runs import RunDir, open_run_data, run_specs

    run = RunDir(trained_run)
    cfg, modules = load_trained(run)
    data, _ = open_run_data(run, cfg, progress=False)
    images = images_to_tensor(np.asarray(data.images[np.sort(data.split["test"][:6])]))
    with torch.no_grad():
        feats = modules.obfuscator(images)
        probs = probabilities(modules.classifier(feats), run_specs(cfg)[0])[0]
    return feats.numpy(), probs.numpy()


@pytest.fixture(scope="module")
def served(trained_run: Path) -> Iterator[tuple[httpx.Client, ServiceModel]]:
    model = load_service_model(trained_run)
    with BackgroundServer(create_app(model, max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield client, model


def post(client: httpx.Client, body: bytes, ctype: str | None) -> httpx.Response:
    return client.post("/v1/predict", content=body, headers={} if ctype is None else {"Content-Type": ctype})


def test_service_answers_real_features_like_in_process_c(served, reference) -> None:
    client, _ = served
    feats, probs = reference
    for transport in ("float32", "npy"):
        r = post(client, *wire.encode_features(feats, transport))
        assert r.status_code == 200, r.text
        got = [p["Smiling"] for p in r.json()["predictions"]]
        np.testing.assert_allclose(got, probs, atol=1e-6)
    single = post(client, *wire.encode_features(feats[2]))
    assert single.json()["batch"] == 1
    assert single.json()["predictions"][0]["Smiling"] == pytest.approx(float(probs[2]), abs=1e-6)
    for transport in ("float16", "int8"):
        r = post(client, *wire.encode_features(feats, transport))
        assert r.status_code == 200 and r.json()["wire_dtype"] == transport
        np.testing.assert_allclose([p["Smiling"] for p in r.json()["predictions"]], probs, atol=0.05)


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _malformed(feats: np.ndarray) -> list[tuple[str, bytes | Iterator[bytes], str | None, int, str]]:
    nan, inf = feats[:2].copy(), feats[:2].copy()
    nan[0, 0, 0, 0], inf[1, 1, 1, 1] = np.nan, np.inf
    good = wire.encode_tensor(feats[:2])
    return [
        ("wrong shape", wire.encode_tensor(feats[:, :3]), wire.TENSOR_CONTENT_TYPE, 422, "bad_shape"),
        ("wrong rank", wire.encode_tensor(feats[0, 0]), wire.TENSOR_CONTENT_TYPE, 422, "bad_shape"),
        ("wrong dtype npy", _npy(feats.astype(np.float64)), wire.NPY_CONTENT_TYPE, 422, "bad_dtype"),
        ("wrong dtype code", good[:5] + b"\x09" + good[6:], wire.TENSOR_CONTENT_TYPE, 422, "bad_dtype"),
        ("NaN", wire.encode_npy(nan), wire.NPY_CONTENT_TYPE, 422, "non_finite"),
        ("inf", _npy(inf), wire.NPY_CONTENT_TYPE, 422, "non_finite"),
        ("truncated", good[:-7], wire.TENSOR_CONTENT_TYPE, 400, "truncated"),
        ("empty", b"", wire.TENSOR_CONTENT_TYPE, 400, "truncated"),
        ("bad magic", b"GIF89a" + good[6:], wire.TENSOR_CONTENT_TYPE, 400, "bad_magic"),
        ("batch too large", wire.encode_tensor(np.zeros((MAX_BATCH + 1, *feats.shape[1:]), np.float32)),
         wire.TENSOR_CONTENT_TYPE, 422, "batch_too_large"),
        ("oversized", bytes(MAX_BODY + 1), wire.TENSOR_CONTENT_TYPE, 413, "body_too_large"),
        ("oversized chunked", (bytes(16 * 1024) for _ in range(8)), wire.TENSOR_CONTENT_TYPE, 413, "body_too_large"),
        ("json content type", good, "application/json", 415, "unsupported_media_type"),
        ("no content type", good, None, 415, "unsupported_media_type"),
    ]


def test_every_malformed_request_gets_its_4xx_and_the_service_survives(served, reference) -> None:
    client, _ = served
    for name, body, ctype, status, code in _malformed(reference[0]):
        r = post(client, body, ctype)
        assert r.status_code == status, (name, r.text)
        assert r.headers["content-type"].startswith("application/json"), name
        error = r.json()["error"]
        assert (error["status"], error["code"]) == (status, code), name
        assert error["message"], name
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/healthz").json()["status"] == "ok"
    assert post(client, *wire.encode_features(reference[0])).status_code == 200


def test_model_card_and_openapi_schema(served) -> None:
    client, model = served
    card = client.get("/v1/model").json()
    assert card["attributes"][0]["name"] == "Smiling"
    assert card["features"]["shape"][1:] == model.feature_shape
    assert card["service"]["max_body_bytes"] == MAX_BODY and card["service"]["max_batch"] == MAX_BATCH
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/predict"]["post"]
    assert set(op["requestBody"]["content"]) == set(wire.CONTENT_TYPES)
    assert {"200", "400", "413", "415", "422"} <= set(op["responses"])
    assert {"/healthz", "/v1/model"} <= set(spec["paths"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_requests_never_crash_the_service(served, reference, data: st.DataObject) -> None:
    client, _ = served
    if data.draw(st.booleans()):
        body = bytearray(wire.encode_features(reference[0][:1], data.draw(st.sampled_from(wire.TRANSPORTS)))[0])
        for _ in range(data.draw(st.integers(1, 6))):
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
        body = body[:data.draw(st.integers(0, len(body)))]
    else:
        body = bytearray(data.draw(st.binary(max_size=256)))
    ctype = data.draw(st.sampled_from([*wire.CONTENT_TYPES, "application/json", "text/plain", "multipart/form-data"]))
    r = post(client, bytes(body), ctype)
    assert r.status_code in (200, 400, 413, 415, 422), r.text
    if r.status_code != 200:
        assert r.json()["error"]["status"] == r.status_code
    else:
        assert np.isfinite(r.json()["predictions"][0]["Smiling"])


def test_onnx_backend_matches_in_process_c(trained_run: Path, reference, tmp_path: Path) -> None:
    from deepobfuscator.deploy.export import export_run

    export_run(trained_run, "onnx", tmp_path, parity_images=4)
    model = load_service_model(trained_run, backend="onnx", onnx_path=tmp_path / "classifier.onnx", threads=1)
    feats, probs = reference
    np.testing.assert_allclose([p["Smiling"] for p in model.predict(feats)], probs, atol=1e-5)
    assert model.card["parity"]["classifier"]["max_abs_diff"] <= 1e-4  # the export's card is served
    with pytest.raises(ValueError, match="unknown backend"):
        load_service_model(trained_run, backend="tflite")
