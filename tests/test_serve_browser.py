"""The page at GET / in a real headless browser: Debian's chromium driven through chromedriver.

Selenium is pointed at `/usr/bin/chromium` and `/usr/bin/chromedriver` (or whatever `PATH`
finds under those names) and never downloads a browser or a driver. The tests skip where
either program or Selenium is missing. Debian packages them as `chromium` and `chromium-driver`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="imgclf serve needs the serve extra: pip install 'imgclf[serve]'")
pytest.importorskip("selenium", reason="the browser tests drive chromium through Selenium")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from conftest import make_image  # noqa: E402
from test_serve import ServerProcess, post_file, tiny_bundle  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 20

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def browser():
    # Selenium Manager would look for, and could fetch, a driver of its own; offline it only
    # checks the paths given here.
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1000,900"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except WebDriverException as error:
        pytest.skip(f"chromium did not start under chromedriver: {error.msg}")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bundle(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    process = ServerProcess(bundle, tmp_path_factory.mktemp("browser_server") / "server.log")
    process.wait_ready()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keyed_server(bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    process = ServerProcess(bundle, tmp_path_factory.mktemp("browser_keyed") / "server.log",
                            "--api-key", "page-key")
    process.wait_ready()
    yield process
    process.stop()


def _bars(driver) -> list[tuple[str, float, str]]:
    """Return the drawn rows as (class, probability, bar width style), top row first."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#results .row")
    return [(row.get_attribute("data-class"), float(row.get_attribute("data-probability")),
             row.find_element(By.CSS_SELECTOR, ".bar").get_attribute("style")) for row in rows]


def _wait_for_bars(driver) -> list[tuple[str, float, str]]:
    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .row"))
    return _bars(driver)


def _wait_for_error(driver) -> str:
    WebDriverWait(driver, WAIT_S).until(lambda d: d.find_element(By.ID, "error").text.strip())
    return driver.find_element(By.ID, "error").text


def _api_answer(server: ServerProcess, path: Path) -> dict:
    status, body = post_file(server.url + "/predict?top_k=5", path.name, path.read_bytes())
    assert status == 200, body
    return body


def test_page_shows_bars_for_picked_file(browser, server, tmp_path):
    image = make_image(tmp_path / "red.png", (220, 40, 40), size=(48, 40), seed=11)
    expected = _api_answer(server, image)
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(image))
    bars = _wait_for_bars(browser)
    assert [name for name, _, _ in bars] == [item["class"] for item in expected["top_k"]]
    assert bars[0][0] == "cat"
    assert bars[0][1] == pytest.approx(expected["confidence"], abs=1e-6)
    assert f"width: {100 * expected['confidence']:.1f}%" in bars[0][2]
    assert "cat" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "error").text == ""
    assert not browser.find_element(By.ID, "api-key").is_displayed()
    browser.save_screenshot(str(tmp_path / "page.png"))


def test_page_classifies_dropped_file(browser, server, tmp_path):
    image = make_image(tmp_path / "blue.jpg", (40, 40, 220), size=(40, 40), seed=12)
    browser.get(server.url + "/")
    browser.execute_script(
        """
        const [encoded, name] = arguments;
        const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], name, {type: "image/jpeg"}));
        const zone = document.getElementById("drop-zone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        """,
        base64.b64encode(image.read_bytes()).decode(), image.name,
    )
    bars = _wait_for_bars(browser)
    assert bars[0][0] == "fish"
    assert len(bars) == 3


def test_page_shows_error_for_non_image(browser, server, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image", "utf-8")
    browser.get(server.url + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(text_file))
    message = _wait_for_error(browser)
    assert "not a recognised image format" in message
    assert "(request " in message
    assert browser.find_elements(By.CSS_SELECTOR, "#results .row") == []


def test_page_sends_api_key(browser, keyed_server, tmp_path):
    image = make_image(tmp_path / "green.png", (40, 220, 40), size=(30, 30), seed=13)
    browser.get(keyed_server.url + "/")
    key_field = browser.find_element(By.ID, "api-key")
    assert key_field.is_displayed()
    browser.find_element(By.ID, "file-input").send_keys(str(image))
    assert "API key" in _wait_for_error(browser)
    key_field.send_keys("page-key")
    browser.find_element(By.ID, "file-input").send_keys(str(image))
    assert _wait_for_bars(browser)[0][0] == "dog"


def test_page_loads_nothing_from_elsewhere(browser, server):
    browser.get(server.url + "/")
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name);")
    assert all(url.startswith(server.url) for url in resources), resources
    with urllib.request.urlopen(server.url + "/metadata", timeout=10) as response:
        assert json.loads(response.read())["classes"] == ["cat", "dog", "fish"]
