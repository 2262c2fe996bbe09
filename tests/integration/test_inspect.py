"""`deepobf inspect`: saved attackers, the JSON endpoint against the in-process pipeline, its 4xx answers, and
the page itself driven in headless Chromium against a real `deepobf inspect` subprocess."""
from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from deepobfuscator.attacks.features import obfuscate
from deepobfuscator.attacks.saved import load_attackers
from deepobfuscator.cli import main
from deepobfuscator.data import images_to_tensor
from deepobfuscator.data.synth import render_synthetic_celeba
from deepobfuscator.deploy import inspect as inspect_mod
from deepobfuscator.deploy import wire
from deepobfuscator.deploy.inspect import create_app, load_inspected_run
from deepobfuscator.deploy.service import BackgroundServer
from deepobfuscator.imaging import load_image
from deepobfuscator.losses import probabilities, resolve_msssim
from deepobfuscator.methods import load_trained
from deepobfuscator.metrics import balanced_accuracy, ms_ssim_per_image
from deepobfuscator.runs import RunDir, open_run_data, run_specs

QUICK = ["--attackers", "mirror,linear", "--epochs", "1", "--batch-size", "16", "--reid-images", "6",
         "--grid-images", "3", "--bootstrap", "10", "--no-progress"]
SHOWN = 6e-4  # the page prints three decimals


@pytest.fixture(scope="module")
def inspect_runs(trained_run: Path, tmp_path_factory: pytest.TempPathFactory, celeba_root: Path) -> dict[str, Path]:
    """Two tiny trained-and-attacked runs (seeds 0 and 1) and one trained but never attacked."""
    base = tmp_path_factory.mktemp("inspect-runs")
    runs = {"seed0": base / "tiny-seed0", "seed1": base / "tiny-seed1", "unattacked": base / "tiny-unattacked"}
    shutil.copytree(trained_run, runs["seed0"])
    shutil.copytree(trained_run, runs["unattacked"])
    assert main(["train", "--preset", "tiny", "--data", str(celeba_root), "--out", str(runs["seed1"]), "--seed", "1",
                 "--set", "data.max_images=160", "--no-progress"]) == 0
    for name in ("seed0", "seed1"):
        assert main(["attack", str(runs[name]), *QUICK]) == 0
    return runs


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic face JPEG at CelebA's aligned size (taller than wide: the crop matters for square runs)."""
    root = render_synthetic_celeba(tmp_path_factory.mktemp("face"), n_images=1, n_identities=1, size=(218, 178), seed=5)
    return root / "img_align_celeba" / "000001.jpg"


def reference(run_dir: Path, image: Path) -> dict[str, Any]:
    """What the page must show for ``image``, computed in process from the run directory."""
    cfg, modules = load_trained(RunDir(run_dir))
    size = (int(cfg.data.image_size[0]), int(cfg.data.image_size[1]))
    pixels = load_image(image, size)
    x = images_to_tensor(np.array(pixels)[None])
    with torch.no_grad():
        feats = obfuscate(cfg, modules, x)
        task_specs, _ = run_specs(cfg)
        cloud = {s.name: float(p[0]) for s, p in zip(task_specs, probabilities(modules.classifier(feats), task_specs))}
        out: dict[str, Any] = {"size": size, "pixels": pixels, "features": feats[0].numpy(), "cloud": cloud,
                               "private": {}, "recon": None}
        attackers = load_attackers(Path(run_dir))
        if attackers:
            best = attackers.reconstructors[0]
            recon = best.module(feats).clamp(0, 1)
            out["recon"] = recon[0].mul(255).round().byte().permute(1, 2, 0).numpy()
            out["ms_ssim"] = float(ms_ssim_per_image(recon, x, resolve_msssim(cfg.msssim, size))[0])
            for attribute, fitted in attackers.attributes.items():
                offset = fitted[0].metrics["training"]["decision_offset"][0]  # the attacker's own decision rule
                out["private"][attribute] = float(torch.sigmoid(fitted[0].module(feats) - offset)[0, 0])
    return out


def _png(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


# ------------------------------------------------------------------------------------------- saved attackers
def test_attack_saves_attackers_that_reproduce_its_test_metrics(inspect_runs: dict[str, Path]) -> None:
    run = RunDir(inspect_runs["seed0"])
    attackers = load_attackers(run.path)
    assert attackers and load_attackers(inspect_runs["unattacked"]) is None
    assert [a.attacker for a in attackers.reconstructors] == ["mirror"] and attackers.unsaved == []
    cfg, modules = load_trained(run)
    data, _ = open_run_data(run, cfg, progress=False)
    rows = np.sort(np.asarray(data.split["test"]))
    images = images_to_tensor(np.asarray(data.images[rows]))
    male = [s.name for s in run_specs(cfg)[1]].index("Male")
    linear = attackers.attributes["Male"][0]
    with torch.no_grad():
        feats = obfuscate(cfg, modules, images).half().float()  # attackers read float16-stored features
        offset = linear.metrics["training"]["decision_offset"][0]  # the rule the attacker chose on its validation split
        guessed = (linear.module(feats)[:, 0] - offset > 0).long().numpy()
        recon = attackers.reconstructors[0].module(feats).clamp(0, 1)
    assert balanced_accuracy(data.private[rows, male], guessed) == pytest.approx(linear.metrics["balanced_accuracy"],
                                                                                abs=1e-6)
    msssim = ms_ssim_per_image(recon, images, resolve_msssim(cfg.msssim, cfg.data.image_size)).mean().item()
    assert msssim == pytest.approx(attackers.reconstructors[0].metrics["ms_ssim"], abs=1e-4)


# ------------------------------------------------------------------------------------------- JSON endpoint
@pytest.fixture(scope="module")
def client(inspect_runs: dict[str, Path]) -> Iterator[httpx.Client]:
    runs = [load_inspected_run(p) for p in inspect_runs.values()]
    with BackgroundServer(create_app(runs, max_body_bytes=64 * 1024, examples=inspect_mod.render_examples(2))) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            yield http


def test_inspect_endpoint_matches_the_in_process_pipeline(client: httpx.Client, inspect_runs: dict[str, Path],
                                                          face: Path) -> None:
    r = client.post("/v1/inspect", params={"filename": face.name}, content=face.read_bytes(),
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["upload"] == {"filename": face.name, "bytes": face.stat().st_size, "format": "JPEG",
                                "width": 178, "height": 218}
    assert [x["run"] for x in answer["runs"]] == [p.name for p in inspect_runs.values()]
    for result, path in zip(answer["runs"], inspect_runs.values()):
        ref = reference(path, face)
        np.testing.assert_array_equal(_png(result["input_png"]), ref["pixels"])
        feats = ref["features"]
        assert result["sent"]["shape"] == list(feats.shape)
        assert result["sent"]["bytes_per_request"] == {d: len(wire.encode_tensor(feats, d))
                                                       for d in ("float32", "float16", "int8")}
        assert result["sent"]["mosaic_channels"] == min(64, feats.shape[0]) and result["sent"]["jpeg_bytes"] > 0
        assert {c["name"]: c["probability"] for c in result["cloud"]} == pytest.approx(ref["cloud"], abs=1e-5)
        eaves = result["eavesdropper"]
        if path.name.endswith("unattacked"):
            assert not eaves["attacked"] and eaves["command"] == f"deepobf attack {path}"
            continue
        assert eaves["attacked"] and eaves["split"] == "test"
        np.testing.assert_array_equal(_png(eaves["reconstruction"]["image_png"]), ref["recon"])
        assert eaves["reconstruction"]["ms_ssim"] == pytest.approx(ref["ms_ssim"], abs=1e-5)
        guesses = {g["name"]: g for g in eaves["attributes"]}
        assert {k: g["probability"] for k, g in guesses.items()} == pytest.approx(ref["private"], abs=1e-5)
        assert 0 <= guesses["Male"]["balanced_accuracy"] <= 1 and guesses["Male"]["majority_rate"] >= 0.5


def test_inspect_refuses_bad_uploads_like_serve(client: httpx.Client, face: Path, monkeypatch) -> None:
    jpeg = face.read_bytes()

    def post(body: bytes, ctype: str | None = "image/jpeg") -> tuple[int, str, str]:
        r = client.post("/v1/inspect", params={"filename": "x.jpg"}, content=body,
                        headers={} if ctype is None else {"Content-Type": ctype})
        error = r.json()["error"]
        assert error["status"] == r.status_code
        return r.status_code, error["code"], error["message"]

    assert post(b"\xff" * (64 * 1024 + 1))[:2] == (413, "body_too_large")
    assert post(b"just some text, not a picture", "image/png")[:2] == (415, "not_an_image")
    code = post(jpeg[: len(jpeg) // 3])
    assert code[:2] == (400, "corrupt_image") and "x.jpg" in code[2]
    assert post(jpeg, "text/plain")[:2] == (415, "unsupported_media_type")
    assert post(jpeg, None)[:2] == (415, "unsupported_media_type")
    assert post(b"")[:2] == (400, "empty_body")
    monkeypatch.setattr(inspect_mod, "MAX_PIXELS", 1000)
    assert post(jpeg)[:2] == (413, "image_too_large")


def test_inspect_schema_pages_and_examples(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/inspect"]["post"]
    assert {"image/jpeg", "image/png", "application/octet-stream"} <= set(post["requestBody"]["content"])
    assert {"200", "400", "413", "415"} <= set(post["responses"])
    assert "InspectResponse" in spec["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'for="file"' in page.text and "http" not in page.text.replace("http-equiv", "")  # no CDN, offline
    assert client.get("/static/inspect.js").status_code == 200 and client.get("/static/nope.js").status_code == 404
    example = client.get("/v1/examples/1")
    assert example.status_code == 200 and Image.open(io.BytesIO(example.content)).size == (178, 218)
    assert client.get("/v1/examples/2").json()["error"]["code"] == "not_found"
    runs = client.get("/v1/runs").json()
    assert [r["attacked"] for r in runs["runs"]] == [True, True, False] and runs["examples"] == 2


def test_a_run_attacked_before_attackers_were_saved_asks_for_a_retrain(inspect_runs: dict[str, Path],
                                                                        tmp_path: Path, face: Path) -> None:
    old = tmp_path / "old-attack"
    shutil.copytree(inspect_runs["seed0"], old)
    for fitted in old.glob("attack/*/fitted"):
        shutil.rmtree(fitted)
    run = load_inspected_run(old)
    assert run.describe()["attacked"] is False and run.attack_command == f"deepobf attack {old} --retrain"
    eaves = inspect_mod.inspect_pixels(run, load_image(face, run.image_size)).eavesdropper
    assert not eaves.attacked and "before attackers were saved" in eaves.note and eaves.reconstruction is None


def test_inspect_cli_names_a_bad_run(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- in a browser
def _chrome() -> Any:
    """Headless Debian Chromium through its chromedriver; skip (fail in CI) where there is none."""
    reason = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        reason = "selenium is not installed (pip install -e .[dev])"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if reason is None and not (browser and driver):
        reason = "no chromium + chromedriver on PATH (as root: .ci/install-browser.sh)"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1250", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def inspect_server(inspect_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`deepobf inspect` on the three runs, as a real subprocess on a free loopback port."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("inspect-server") / "inspect.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "deepobfuscator.cli", "inspect", *map(str, inspect_runs.values()),
                                 "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"deepobf inspect exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"deepobf inspect did not answer on {url}:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_PIXELS_JS = """
const img = arguments[0];
if (!img.complete || !img.naturalWidth) return null;
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const ctx = canvas.getContext('2d');
ctx.drawImage(img, 0, 0);
return [img.naturalWidth, img.naturalHeight, Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data)];
"""


def test_inspect_page_in_headless_chromium(inspect_server: str, inspect_runs: dict[str, Path], face: Path,
                                           tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chrome()
    try:
        driver.get(inspect_server + "/")
        body = driver.find_element(By.TAG_NAME, "body")
        WebDriverWait(driver, 60).until(lambda d: body.get_attribute("data-ready") == "true")
        assert driver.find_element(By.CSS_SELECTOR, "label[for=file]").text
        assert driver.find_element(By.ID, "drop").get_attribute("tabindex") == "0"
        columns = driver.find_elements(By.CSS_SELECTOR, "article.run")
        assert len(columns) == 3
        assert "Not attacked yet" in columns[2].text and f"deepobf attack {inspect_runs['unattacked']}" in columns[2].text

        driver.find_element(By.ID, "file").send_keys(str(face))
        WebDriverWait(driver, 120).until(lambda d: body.get_attribute("data-results") == "1")
        elapsed_ms = float(driver.find_element(By.ID, "elapsed").get_attribute("data-ms"))
        print(f"upload to results in the browser: {elapsed_ms:.0f} ms for {len(columns)} runs")
        assert all(img.get_attribute("alt") for img in driver.find_elements(By.TAG_NAME, "img"))

        for i, path in enumerate(inspect_runs.values()):
            ref = reference(path, face)
            col = columns[i]
            shown = {s.get_attribute("data-attr"): float(s.text)
                     for s in col.find_elements(By.CSS_SELECTOR, "span.prob[data-kind=cloud]")}
            assert shown == pytest.approx(ref["cloud"], abs=SHOWN)
            width, height, _ = driver.execute_script(_PIXELS_JS, col.find_element(By.CSS_SELECTOR, "img.input-image"))
            assert (height, width) == ref["size"]
            if ref["recon"] is None:
                assert "Not attacked yet" in col.text and not col.find_elements(By.CSS_SELECTOR, "img.recon")
                continue
            guessed = {s.get_attribute("data-attr"): float(s.text)
                       for s in col.find_elements(By.CSS_SELECTOR, "span.prob[data-kind=private]")}
            assert guessed == pytest.approx(ref["private"], abs=SHOWN)
            assert float(col.find_element(By.CSS_SELECTOR, "span.msssim").text) == pytest.approx(ref["ms_ssim"], abs=SHOWN)
            drawn = driver.execute_script(_PIXELS_JS, col.find_element(By.CSS_SELECTOR, "img.recon"))
            assert drawn is not None, "the reconstruction image did not render"
            width, height, rgba = drawn
            assert (height, width) == ref["size"]
            rgb = np.asarray(rgba, dtype=np.int16).reshape(height, width, 4)[..., :3]
            assert rgb.std() > 1.0  # not a blank image
            assert np.abs(rgb - ref["recon"].astype(np.int16)).mean() < 2.0
        screenshot = tmp_path / "inspect.png"
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if os.environ.get("DEEPOBF_SCREENSHOT_DIR"):
            shutil.copy(screenshot, Path(os.environ["DEEPOBF_SCREENSHOT_DIR"]) / "inspect-test.png")

        corrupt = tmp_path / "broken.jpg"
        corrupt.write_bytes(face.read_bytes()[:700])
        driver.find_element(By.ID, "file").send_keys(str(corrupt))
        error = driver.find_element(By.ID, "error")
        WebDriverWait(driver, 60).until(lambda d: error.is_displayed())
        assert "HTTP 400" in error.text and "corrupt_image" in error.text and "broken.jpg" in error.text
        assert "Could not inspect broken.jpg" in driver.find_element(By.ID, "status").text

        example = driver.find_elements(By.CSS_SELECTOR, "#examples button")[0]  # keyboard only: Tab there, Enter
        example.send_keys(Keys.ENTER)
        WebDriverWait(driver, 120).until(lambda d: body.get_attribute("data-results") == "2")
        assert not error.is_displayed() and "synthetic-face-1.jpg" in driver.find_element(By.ID, "status").text
    finally:
        driver.quit()
