"""Shared fixtures: CelebA-layout data (the real subset in ../shared/data when it is there, else a
small synthetic face set rendered once per session), tiny configs, one tiny trained run.

``DEEPOBF_TEST_DATA=synthetic`` forces the synthetic fallback even where ``../shared`` exists.
Tests that pin facts of the real data carry ``@pytest.mark.shared`` and are skipped without it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FORCE_SYNTHETIC = os.environ.get("DEEPOBF_TEST_DATA", "").strip().lower() == "synthetic"
HAVE_SHARED = SHARED.is_dir() and not FORCE_SYNTHETIC
SKIP_REASON = ("needs the real datasets in ../shared/data beside the project root "
               + ("(DEEPOBF_TEST_DATA=synthetic forces the synthetic fallback)" if FORCE_SYNTHETIC
                  else f"(not found at {SHARED})"))
# the synthetic stand-in: the shared subset's image size (H, W), enough images for every split test
SYNTH_IMAGES, SYNTH_IDENTITIES, SYNTH_SIZE = 1200, 150, (109, 89)
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``shared`` tests without the real data; refuse tests that read it unmarked."""
    unmarked = [item.nodeid for item in items
                if "shared_data" in getattr(item, "fixturenames", ()) and item.get_closest_marker("shared") is None]
    if unmarked:
        raise pytest.UsageError("tests that use the shared_data fixture must be marked @pytest.mark.shared: "
                                + ", ".join(unmarked))
    if HAVE_SHARED:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("shared") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project root (only for tests marked ``shared``)."""
    if not HAVE_SHARED:
        pytest.skip(SKIP_REASON)
    return SHARED


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CelebA-layout root: the real subset when present, else the project's own synthetic faces."""
    if HAVE_SHARED:
        return SHARED / "celeba"
    from deepobfuscator.data.synth import render_synthetic_celeba

    return render_synthetic_celeba(tmp_path_factory.mktemp("synthetic-celeba"), n_images=SYNTH_IMAGES,
                                   n_identities=SYNTH_IDENTITIES, size=SYNTH_SIZE, seed=0)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep decoded-image caches of the test session out of the user's home."""
    path = Path(os.environ.get("DEEPOBF_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["DEEPOBF_CACHE"] = str(path)
    return path


@pytest.fixture
def tiny_cfg(celeba_root: Path):
    """The `tiny` preset on the CelebA-layout test root (96 images, 32x32, seconds to train)."""
    from deepobfuscator.config import preset

    cfg = preset("tiny")
    cfg.data.root = str(celeba_root)
    return cfg


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, celeba_root: Path) -> Path:
    """One tiny DeepObfuscator run trained once per session (Smiling / Male), for downstream commands."""
    from deepobfuscator.config import preset
    from deepobfuscator.methods import train_run

    cfg = preset("tiny")
    cfg.data.root = str(celeba_root)
    cfg.data.max_images = 160
    out = tmp_path_factory.mktemp("runs") / "tiny-run"
    train_run(cfg, out, progress=False)
    return out


def _noise_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    """A small random-content JPEG (``size`` = (width, height)) at ``path``."""
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


@pytest.fixture(scope="session")
def statefarm_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny State Farm root in the official layout: ``imgs/train/c0..c9/`` and ``driver_imgs_list.csv``
    (4 drivers, 3 images per driver and behaviour: 120 images of 64x48)."""
    root = tmp_path_factory.mktemp("statefarm")
    rows = ["subject,classname,img"]
    n = 0
    for c in range(10):
        for driver in ("p002", "p012", "p024", "p081"):
            for _ in range(3):
                n += 1
                _noise_jpeg(root / "imgs" / "train" / f"c{c}" / f"img_{n}.jpg", (64, 48), n)
                rows.append(f"{driver},c{c},img_{n}.jpg")
    (root / "driver_imgs_list.csv").write_text("\n".join(rows) + "\n")
    return root


LFW_PEOPLE = {"Ann_Lee": (6, "female"), "Bo_Wu": (5, "male"), "Cy_Ng": (4, "male"), "Di_Ho": (5, "female"),
              "Ed_Yu": (6, "male"), "Flo_Ma": (4, "female"), "Gus_Ko": (5, "male"), "Hal_Po": (5, "male")}


@pytest.fixture(scope="session")
def lfw_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LFW root in the official layout: ``lfw-deepfunneled/Person_Name/Person_Name_0001.jpg`` and
    the public ``female_names.txt`` / ``male_names.txt`` lists (8 people, 40 images of 62x62)."""
    root = tmp_path_factory.mktemp("lfw")
    lists: dict[str, list[str]] = {"female": [], "male": []}
    seed = 0
    for person, (count, sex) in LFW_PEOPLE.items():
        for i in range(1, count + 1):
            seed += 1
            name = f"{person}_{i:04d}.jpg"
            _noise_jpeg(root / "lfw-deepfunneled" / person / name, (62, 62), seed)
            lists[sex].append(name)
    for sex, names in lists.items():
        (root / f"{sex}_names.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def run_copy(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the session's tiny trained run per test module (attacks write into the run directory)."""
    import shutil

    target = tmp_path_factory.mktemp("attack") / "run"
    shutil.copytree(trained_run, target)
    return target


@pytest.fixture
def fitted_attackers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names (``desc``) of the learned attackers the suite trains from here on, in order (a spy on the one fit
    loop as the reconstruction and attribute attackers call it); clear the list between attacks."""
    from deepobfuscator.attacks import attribute, reconstruction

    trained: list[str] = []
    for module in (reconstruction, attribute):
        def spy(*args, _real=module.fit_model, **kwargs):
            trained.append(kwargs["desc"])
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, "fit_model", spy)
    return trained


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server: ``DEEPOBF_TEST_POSTGRES_URL`` (.ci/run starts one), else a private one started here
    from Debian's server binaries (.ci/postgres.sh); skipped with the reason where there are none, except in CI."""
    import shutil
    import socket
    import subprocess
    import tempfile

    url = os.environ.get("DEEPOBF_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    script = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries:
        if os.environ.get("CI"):
            pytest.fail("CI: no PostgreSQL server binaries (.ci/run installs Debian's postgresql)")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql, or set DEEPOBF_TEST_POSTGRES_URL)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tempfile.mkdtemp(prefix="deepobf-test-pg-")  # under /tmp: reachable by the postgres user when root
    proc = subprocess.run(["bash", str(script), "start", data, str(port)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"could not start a private PostgreSQL server: {proc.stderr[-2000:]}")
    try:
        yield proc.stdout.strip()
    finally:
        subprocess.run(["bash", str(script), "stop", data], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
