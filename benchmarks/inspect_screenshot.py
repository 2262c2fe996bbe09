"""Screenshot of the `deepobf inspect` page for the README, with a synthetic example face as the upload.

Starts `deepobf inspect RUN...` on a free loopback port, opens the page in headless Debian Chromium
(Selenium + chromedriver; `.ci/install-browser.sh` installs them), clicks an embedded synthetic face
(drawn by `deepobfuscator.data.synth`, never a dataset image), waits for the results, prints the time
from upload to results (median over `--repeat` uploads), and saves a downscaled, palette PNG of the whole page:

    deepobf train --preset demo --out runs/demo-hardened           # the default defence
    deepobf baseline encoder --preset demo --out runs/demo-enc      # the no-defence reference
    for r in runs/demo-hardened runs/demo-enc; do deepobf attack $r --budget quick --repeat 1 \
        --attackers mirror,resrec,vgg,linear,constant; done           # the attackers the page runs
    python benchmarks/inspect_screenshot.py runs/demo-enc runs/demo-hardened --out docs/inspect.png

Use runs trained on the embedded synthetic faces (no `--data`) so that nothing in the picture comes from
a dataset: every image on the page is derived from the synthetic example.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_inspect(runs: list[str], port: int, log: Path) -> subprocess.Popen:
    """`deepobf inspect` as a subprocess, once it answers /healthz."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deepobfuscator.cli", "inspect", *runs, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"deepobf inspect exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"deepobf inspect did not start:\n{log.read_text()}")


def main() -> int:
    """Render the page, click an example, save the screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories, shown side by side")
    parser.add_argument("--out", default="docs/inspect.png", help="PNG to write")
    parser.add_argument("--example", type=int, default=0, help="which synthetic example face to upload")
    parser.add_argument("--width", type=int, default=1400, help="browser window width (CSS pixels)")
    parser.add_argument("--scale", type=float, default=0.75, help="downscale factor of the saved PNG")
    parser.add_argument("--repeat", type=int, default=1, help="upload the example this many times (timing)")
    parser.add_argument("--colors", type=int, default=128, help="palette size of the saved PNG")
    args = parser.parse_args()

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver_path):
        raise SystemExit("needs chromium and chromedriver on PATH (.ci/install-browser.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_inspect(args.runs, port, Path(tmp) / "inspect.log")
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={args.width},1000",
                    "--force-device-scale-factor=1", "--hide-scrollbars"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            body = driver.find_element(By.TAG_NAME, "body")
            WebDriverWait(driver, 60).until(lambda d: body.get_attribute("data-ready") == "true")
            times = []
            for i in range(1, args.repeat + 1):
                driver.find_elements(By.CSS_SELECTOR, "#examples button")[args.example].click()
                WebDriverWait(driver, 120).until(lambda d: body.get_attribute("data-results") == str(i))
                times.append(float(driver.find_element(By.ID, "elapsed").get_attribute("data-ms")))
            print(f"upload to results in the browser over {len(times)} uploads: median {statistics.median(times):.0f} ms "
                  f"(first {times[0]:.0f}, min {min(times):.0f}, max {max(times):.0f}); last: "
                  f"{driver.find_element(By.ID, 'status').text}")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # the whole page as one viewport
                                   {"width": args.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            time.sleep(0.5)
            raw = Path(tmp) / "raw.png"
            driver.save_screenshot(str(raw))
        finally:
            driver.quit()
            proc.terminate()
            proc.wait(timeout=15)
        with Image.open(raw) as shot:
            shot = shot.convert("RGB")
            size = (round(shot.width * args.scale), round(shot.height * args.scale))
            small = shot.resize(size, Image.Resampling.LANCZOS).quantize(colors=args.colors, dither=Image.Dither.NONE)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        small.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {size[0]}x{size[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
