"""The gallery page and the web demo in a real browser (headless Chromium driven by selenium), plus the
demo's limits without a browser.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (a test tool's own browser download cannot
work offline); ``.ci/run`` installs them, elsewhere the browser tests are skipped with that reason.
``CYCLESTYLE_SCREENSHOTS=1`` also saves docs/gallery.png and docs/serve.png from the pages tested.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from cyclestyle import evaluation
from cyclestyle.gallery import build_gallery

from .test_translate import smooth_image

pytestmark = pytest.mark.usefixtures("single_threaded_module")  # tiny networks: see conftest.one_thread

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
LOCAL_SCHEMES = {"file", "data", "blob"}
SCREENSHOTS = os.environ.get("CYCLESTYLE_SCREENSHOTS") == "1"
WAIT = 60  # seconds, for anything the page does (a busy 2-core machine can be slow)

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium not found: apt-get install chromium chromium-driver (Debian packages; CI installs them)")


# --- helpers --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium not found: apt-get install chromium chromium-driver (Debian packages; CI installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,700",
                "--hide-scrollbars", "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    # Every request the pages make ends up in the performance log (Network.* DevTools events).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def requested_urls(driver) -> list[str]:
    """URLs requested (HTTP and websockets) since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def assert_all_local(urls: list[str]) -> None:
    assert urls, "no request was logged: the performance log is not working"
    outside = [u for u in urls if urlparse(u).scheme not in LOCAL_SCHEMES and urlparse(u).hostname not in LOCAL_HOSTS]
    assert not outside, f"requests leaving the machine: {outside}"


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def natural_sizes(driver, css: str) -> list[tuple[int, int] | None]:
    """(naturalWidth, naturalHeight) of each matching image; None while it is still loading."""
    return [tuple(size) if size else None for size in driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map("
        "i => i.complete ? [i.naturalWidth, i.naturalHeight] : null)", css)]


def save_screenshot(driver, name: str, height: int = 700) -> None:
    """docs/NAME, 900 px wide, reduced to 256 colours so it stays small (a README illustration)."""
    size = driver.get_window_size()
    driver.set_window_size(900, height)
    try:
        image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    finally:
        driver.set_window_size(size["width"], size["height"])
    if image.width != 900:
        image = image.resize((900, round(image.height * 900 / image.width)), Image.Resampling.LANCZOS)
    image = image.quantize(256, method=Image.Quantize.MEDIANCUT)
    target = ROOT / "docs" / name
    target.parent.mkdir(exist_ok=True)
    image.save(target, optimize=True)
    assert target.stat().st_size < 150_000, f"{target} is {target.stat().st_size} bytes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (w, h) in enumerate([(120, 80), (80, 120), (100, 100)]):
        smooth_image(w, h, seed=i).save(folder / f"photo_{i}.jpg")
    return folder


# --- the gallery --------------------------------------------------------------------------------------------


@needs_browser
def test_gallery_images_load_and_figures_show(browser, tiny_trained_run, photos, tmp_path):
    run = tmp_path / "run"  # a copy: the report goes into it, the session's run stays untouched
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    records = [{"direction": "a2b", "fid": 42.4242, "kid_mean": 0.01234, "kid_std": 0.00056, "n_generated": 3,
                "n_reference": 3, "checkpoint": str(run), "checkpoint_step": 2, "timestamp": "2026-01-02T03:04:05",
                "library": "torch-fidelity", "library_version": "0.4.0", "feature_extractor": "inception-v3-compat",
                "weights_path": "/weights.pth"}]
    evaluation.write_report(records, evaluation.default_output_dir(run) / "metrics.json")
    page = build_gallery(photos, tmp_path / "gallery", [run], reconstruction=True, device="cpu")

    requested_urls(browser)  # drop what earlier tests logged
    browser.get(page.as_uri())
    n_images = 3 * 3  # input, translation, reconstruction per photo
    sizes = wait_for(lambda: (s := natural_sizes(browser, "img")) and all(s) and s, "the gallery's images")
    assert len(sizes) == n_images and all(w > 0 and h > 0 for w, h in sizes), sizes
    text = browser.find_element("tag name", "body").text  # what is visible
    assert "42.424" in text and "12.340 ± 0.560" in text and "3 vs 3" in text
    assert "resnet_6blocks" in browser.execute_script("return document.body.textContent")  # in a closed <details>
    if SCREENSHOTS:
        save_screenshot(browser, "gallery.png", height=1150)
    # a thumbnail links to its full-size image, which loads at the input's size
    browser.find_element("css selector", "td a").click()
    wait_for(lambda: browser.current_url.endswith("/full/000/input.png"), "the full-size image")
    assert wait_for(lambda: natural_sizes(browser, "img")[0], "the full-size image to load") == (120, 80)
    assert_all_local(requested_urls(browser))


# --- the web demo -------------------------------------------------------------------------------------------


@pytest.fixture
def demo_server(tiny_trained_run, tmp_path):
    """`cyclestyle serve` as a real subprocess on a free loopback port; yields its URL."""
    pytest.importorskip("gradio", reason="gradio is in the serve and dev extras")
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cyclestyle", "serve", "--checkpoint", str(tiny_trained_run),
                                 "--port", str(port), "--device", "cpu", "--max-size", "1024"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"

    def answers():
        if proc.poll() is not None:
            raise AssertionError(f"cyclestyle serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(answers, "cyclestyle serve to answer", timeout=90)
        assert f"on {url}" in log.read_text()  # loopback by default
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _upload(browser, url: str, file: Path) -> None:
    browser.get(url)
    field = wait_for(lambda: browser.find_elements("css selector", "#upload input[type=file]"), "the upload field")
    field[0].send_keys(str(file))


@needs_browser
def test_demo_translates_an_upload_and_refuses_a_non_image(browser, demo_server, tmp_path):
    from selenium.webdriver.common.keys import Keys

    photo = tmp_path / "photo.jpg"
    smooth_image(300, 200).save(photo)
    requested_urls(browser)
    _upload(browser, demo_server, photo)
    size = browser.find_element("css selector", "#side input[type=number]")
    size.clear()
    size.send_keys("150", Keys.TAB)  # longer side at most 150 px: 300x200 -> 150x100
    browser.find_element("css selector", "#translate").click()
    result = wait_for(lambda: [s for s in natural_sizes(browser, "#result img") if s and s[0] > 0], "the result image")
    assert result == [(150, 100)]
    # the download link serves the same PNG
    href = wait_for(lambda: [a.get_attribute("href") for a in browser.find_elements("css selector", "#download a")
                             if a.get_attribute("href")], "the download link")[0]
    with urllib.request.urlopen(href, timeout=10) as response:
        downloaded = Image.open(io.BytesIO(response.read()))
    assert downloaded.format == "PNG" and downloaded.size == (150, 100)
    if SCREENSHOTS:
        save_screenshot(browser, "serve.png")

    not_image = tmp_path / "notes.png"
    not_image.write_text("a text file with an image's name\n")
    _upload(browser, demo_server, not_image)
    browser.find_element("css selector", "#translate").click()
    wait_for(lambda: "is not an image" in browser.find_element("tag name", "body").text, "the error message")
    assert "Traceback" not in browser.find_element("tag name", "body").text
    assert_all_local(requested_urls(browser))


# --- the demo's limits, without a browser ---------------------------------------------------------------------


@pytest.fixture
def demo(tiny_trained_run, tmp_path):
    serve = pytest.importorskip("cyclestyle.serve", reason="gradio is in the serve and dev extras")
    return serve, serve.Demo(tiny_trained_run, "cpu", max_side=1200, max_upload_mb=0.05, max_pixels=2_000_000,
                             results_dir=tmp_path / "results")


def test_demo_caps_the_size_and_tiles_large_outputs(demo, tmp_path, monkeypatch):
    serve, d = demo
    calls = []
    monkeypatch.setattr(d.translators["b2a"].__class__, "__call__",
                        lambda self, image, tile=None, overlap=64, **style: calls.append(tile) or image)
    assert d.translate_image(smooth_image(1600, 800), "b2a", 5000).size == (1200, 600)  # capped at max_side
    assert d.translate_image(smooth_image(300, 200), "b2a", 1000).size == (300, 200)  # never upscaled
    assert d.translate_image(smooth_image(300, 200), "b2a", 10).size == (serve.MIN_SIDE, 43)
    assert calls == [serve.TILE, None, None]  # tiled above TILE_ABOVE px only
    assert set(d.translators) == {"a2b", "b2a"}
    with pytest.raises(serve.UploadError, match="direction"):
        d.translate_image(smooth_image(30, 20), "sideways", 64)


def test_demo_refuses_big_files_huge_images_and_non_images(demo, tmp_path):
    serve, d = demo
    ok = tmp_path / "ok.png"
    smooth_image(60, 40).save(ok)
    out = d.translate_file(ok, "a2b", 64)
    assert out.parent == tmp_path / "results" and Image.open(out).size == (60, 40)
    big_file = tmp_path / "big.bmp"  # 0.05 MB limit: an uncompressed 200x100 BMP is 60 kB
    smooth_image(200, 100).save(big_file)
    with pytest.raises(serve.UploadError, match=r"is 0\.1 MB; the limit is 0\.05 MB"):
        d.open_upload(big_file)
    huge = tmp_path / "huge.png"  # 2 Mpx limit; a flat PNG of 3 Mpx is a few kB
    Image.new("RGB", (2000, 1500), (10, 20, 30)).save(huge)
    with pytest.raises(serve.UploadError, match=r"2000x1500 \(3 Mpx\); the limit is 2 Mpx"):
        d.open_upload(huge)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    with pytest.raises(serve.UploadError, match="not an image"):
        d.open_upload(text)


def test_without_gradio_the_command_says_what_to_install(tiny_trained_run, monkeypatch, capsys):
    from cyclestyle.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail as if it were not installed
    monkeypatch.delitem(sys.modules, "cyclestyle.serve", raising=False)
    monkeypatch.delattr(sys.modules["cyclestyle"], "serve", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'cyclestyle\[serve\]'"):
        importlib.import_module("cyclestyle.serve")
    assert main(["serve", "--checkpoint", str(tiny_trained_run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'cyclestyle[serve]'" in err
