"""The viewer page and /docs in a real headless Chromium, against the live service on 127.0.0.1.

Each test ends by checking Chromium's network log: the page and /docs asked nothing of any host
but the service. Screenshots of each state land in tests/browser/screenshots/.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import API_KEY, MAX_FILES, SLIDE_NAME, screenshot

pytestmark = pytest.mark.slow

CLASSIFIER = "ebhi_cbam_resnet18/1"


def wait(driver, timeout: float = 60):
    return WebDriverWait(driver, timeout)


def assert_only_service(driver):
    outside = driver.network_log.outside()
    assert not outside, f"the browser asked hosts other than the service: {outside}"
    assert driver.network_log.urls, "the performance log recorded no request at all: the check would be blind"


def ebhi_images(ebhi_dir: Path, cls: str, n: int) -> list[Path]:
    paths = sorted((ebhi_dir / cls).glob("*.png"))[:n]
    assert len(paths) == n, f"fewer than {n} PNGs under {ebhi_dir / cls}"
    return paths


def choose_files(driver, input_id: str, paths: list[Path]) -> None:
    field = driver.find_element(By.ID, input_id)
    field.clear()
    field.send_keys("\n".join(str(p) for p in paths))


def message(driver, box_id: str, contains: str, timeout: float = 60) -> str:
    box = driver.find_element(By.ID, box_id)
    wait(driver, timeout).until(lambda d: contains in box.text)
    return box.text


def test_classify_shows_label_bars_and_gradcam(page, api, ebhi_dir):
    images = ebhi_images(ebhi_dir, "adenocarcinoma", 1) + ebhi_images(ebhi_dir, "normal", 1)
    Select(page.find_element(By.ID, "classify-model")).select_by_value(f"model:{CLASSIFIER}")
    choose_files(page, "classify-files", images)
    page.find_element(By.ID, "classify-submit").click()

    cards = wait(page).until(lambda d: (c := d.find_elements(By.CSS_SELECTOR, "#classify-results .result"))
                             and len(c) == 2 and c)
    classes = api.get(f"/models/{CLASSIFIER}").json()["classes"]
    expected = api.post("/classify", data={"model": CLASSIFIER, "top_k": "5"},
                        files=[("files", (p.name, p.read_bytes(), "image/png")) for p in images]).json()
    for card, want in zip(cards, expected["results"], strict=True):
        assert card.find_element(By.TAG_NAME, "h3").text == want["filename"]
        assert card.find_element(By.CSS_SELECTOR, ".label").text == want["label"]
        names = [e.get_attribute("textContent") for e in card.find_elements(By.CSS_SELECTOR, ".bars .name")]
        assert names == [k["label"] for k in want["top_k"]] and len(names) == min(5, len(classes))
        widths = [float(e.get_attribute("style").split("width:")[1].rstrip("%;")) for e in
                  card.find_elements(By.CSS_SELECTOR, ".bars .fill")]
        assert widths == sorted(widths, reverse=True) and widths[0] > 0
        assert abs(widths[0] - 100 * want["score"]) < 0.1

    # The Grad-CAM heatmap arrives for each card, drawn over the image.
    first = cards[0]
    status = first.find_element(By.CSS_SELECTOR, ".gradcam .status")
    wait(page).until(lambda d: "Heatmap" in status.text)
    canvas = first.find_element(By.TAG_NAME, "canvas")
    assert canvas.is_displayed()
    spread = page.execute_script("""
        const c = arguments[0], px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lo = 255, hi = 0; for (let i = 0; i < px.length; i += 4) { lo = Math.min(lo, px[i]); hi = Math.max(hi, px[i]); }
        return [c.width, c.height, hi - lo];""", canvas)
    assert spread[0] > 1 and spread[1] > 1 and spread[2] > 0, f"the heatmap canvas is blank: {spread}"

    # Opacity slider: keyboard moves it, and the overlay follows.
    slider = first.find_element(By.CSS_SELECTOR, ".gradcam-opacity")
    slider.send_keys(Keys.END)
    assert canvas.value_of_css_property("opacity") == "1"
    slider.send_keys(Keys.HOME)
    assert canvas.value_of_css_property("opacity") == "0"
    for _ in range(7):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert canvas.value_of_css_property("opacity") == "0.07"

    # Target class: another class re-asks /gradcam for that class.
    other = next(c for c in classes if c != expected["results"][0]["label"])
    Select(first.find_element(By.CSS_SELECTOR, ".gradcam-target")).select_by_value(other)
    wait(page).until(lambda d: f"\u201c{other}\u201d" in status.text)
    slider.send_keys(Keys.END)
    for _ in range(55):
        slider.send_keys(Keys.ARROW_LEFT)
    assert "classified with ebhi_cbam_resnet18" in page.find_element(By.ID, "classify-message").text
    screenshot(page, "classify")
    assert_only_service(page)


def test_adapter_is_built_used_listed_and_deleted(page, api, ebhi_dir):
    page.find_element(By.ID, "api-key").clear()
    page.find_element(By.ID, "adapt-name").send_keys("browser test")
    rows = page.find_elements(By.CSS_SELECTOR, ".class-row")
    for row, (label, cls) in zip(rows, [("adeno", "adenocarcinoma"), ("normal", "normal")], strict=True):
        row.find_element(By.CSS_SELECTOR, ".class-name").send_keys(label)
        row.find_element(By.CSS_SELECTOR, ".class-files").send_keys(
            "\n".join(str(p) for p in ebhi_images(ebhi_dir, cls, 3)))
        assert row.find_element(By.CSS_SELECTOR, ".count").text == "3 images"

    # No key yet: the service answers 401 and the page asks for the key, with focus on the field.
    page.find_element(By.ID, "adapt-submit").click()
    text = message(page, "adapt-message", "API key")
    assert "HTTP 401" in text and "X-API-Key" in text, text
    assert page.switch_to.active_element.get_attribute("id") == "api-key"
    page.switch_to.active_element.send_keys(API_KEY)
    page.find_element(By.ID, "adapt-submit").click()

    card = wait(page).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#adapt-result .adapter-card")))
    assert "browser test" in card.text
    loo = card.find_element(By.CSS_SELECTOR, ".loo").text
    assert loo.endswith("%") and 0.0 <= float(loo.rstrip("%")) <= 100.0
    (stored,) = [a for a in api.get("/adapters").json()["adapters"] if a["name"] == "browser test"]
    assert stored["shots"] == {"adeno": 3, "normal": 3}
    assert f"the {stored['head']} head on" in card.find_element(By.CSS_SELECTOR, ".reads").text
    row = wait(page).until(lambda d: d.find_element(By.CSS_SELECTOR, f"#adapters-table tr[data-id='{stored['id']}']"))
    assert "adeno (3), normal (3)" in row.text
    assert f"{100 * stored['loo_accuracy']:.1f}%" in row.text
    screenshot(page, "adapter-created")

    # Use it from the page: classify a held-out image with the adapter.
    card.find_element(By.TAG_NAME, "button").click()
    assert Select(page.find_element(By.ID, "classify-model")).first_selected_option.get_attribute("value") \
        == f"adapter:{stored['id']}"
    choose_files(page, "classify-files", ebhi_images(ebhi_dir, "normal", 4)[3:])
    page.find_element(By.ID, "classify-submit").click()
    result = wait(page).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#classify-results .result")))
    assert result.find_element(By.CSS_SELECTOR, ".label").text in {"adeno", "normal"}
    assert "adapter browser test" in page.find_element(By.ID, "classify-message").text
    screenshot(page, "adapter-classify")

    # Delete it from the table (the page asks for confirmation first).
    row.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait(page).until(EC.alert_is_present()).accept()
    message(page, "adapters-message", "Deleted adapter browser test")
    assert not page.find_elements(By.CSS_SELECTOR, f"#adapters-table tr[data-id='{stored['id']}']")
    assert all(a["id"] != stored["id"] for a in api.get("/adapters").json()["adapters"])
    page.execute_script("sessionStorage.clear()")
    assert_only_service(page)


def test_bad_input_gets_a_readable_message(page, ebhi_dir, tmp_path):
    submit = page.find_element(By.ID, "classify-submit")
    Select(page.find_element(By.ID, "classify-model")).select_by_value(f"model:{CLASSIFIER}")

    # A file the browser knows is not an image never leaves the page.
    notes = tmp_path / "notes.txt"
    notes.write_text("not pixels")
    page.network_log.drain()
    choose_files(page, "classify-files", [notes])
    submit.click()
    assert "Not an image: notes.txt (text/plain)" in message(page, "classify-message", "Not an image")
    assert not [u for u in page.network_log.drain() if u.endswith("/classify")], "the text file was sent"

    # Bytes named .png that are no image: the service's 415, in its own words.
    fake = tmp_path / "broken.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing an image decoder accepts")
    choose_files(page, "classify-files", [fake])
    submit.click()
    text = message(page, "classify-message", "HTTP 415")
    assert text.startswith("Not a supported image (HTTP 415): broken.png"), text

    # More files than the service takes in one request: its 413.
    choose_files(page, "classify-files", ebhi_images(ebhi_dir, "polyp", MAX_FILES + 1))
    submit.click()
    text = message(page, "classify-message", "HTTP 413")
    assert f"{MAX_FILES + 1} files in one request; the limit is {MAX_FILES}" in text, text
    screenshot(page, "bad-input-413")

    # The service cannot be reached (the browser is offline): say so, not a stack trace.
    choose_files(page, "classify-files", ebhi_images(ebhi_dir, "polyp", 1))
    page.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                             "downloadThroughput": -1, "uploadThroughput": -1})
    try:
        submit.click()
        text = message(page, "classify-message", "Cannot reach the service")
        assert page.current_url.split("/")[2] in text
    finally:
        page.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                                 "downloadThroughput": -1, "uploadThroughput": -1})
    screenshot(page, "bad-input-unreachable")
    assert_only_service(page)


def test_page_is_keyboard_and_screen_reader_friendly(page):
    # Every control in the page has a label a screen reader announces.
    unlabelled = page.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')].filter(e => e.type !== 'hidden')
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !e.getAttribute('aria-labelledby')).map(e => e.id || e.outerHTML.slice(0, 80));""")
    assert unlabelled == []
    # Results and messages are announced when they change.
    assert page.find_element(By.ID, "classify-results").get_attribute("aria-live") == "polite"
    assert page.find_element(By.ID, "adapt-result").get_attribute("aria-live") == "polite"
    for box in ("classify-message", "adapt-message", "adapters-message"):
        assert page.find_element(By.ID, box).get_attribute("role") == "alert"
    # Focus follows the reading order: no positive tabindex, and Tab walks header -> classify form.
    assert page.execute_script("return [...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0).length") == 0
    page.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    slides = ["nav-slides"] if page.find_element(By.ID, "nav-slides").is_displayed() else []
    order = []
    for _ in range(9 + len(slides)):
        ActionChains(page).send_keys(Keys.TAB).perform()  # to the window: a file input takes send_keys as a path
        active = page.switch_to.active_element
        order.append(active.get_attribute("id") or active.get_attribute("href").rsplit("/", 1)[-1])
    assert order == ["#main", "#classify", "#adapt", *slides, "docs", "api-key", "classify-model", "classify-topk",
                     "classify-files", "classify-submit"], order
    assert_only_service(page)


def test_docs_lists_classify_offline(browser, live_service):
    browser.get(live_service["url"] + "/docs")
    paths = wait(browser).until(lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
                                or None)
    for path in ("/classify", "/adapt", "/gradcam", "/models", "/adapters/{adapter_id}", "/readyz"):
        assert path in paths, paths
    # The answer is documented too: open /classify and find its response schema.
    browser.find_element(By.CSS_SELECTOR, "[id^='operations-classify-classify'] .opblock-summary").click()
    panel = wait(browser).until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".opblock.is-open .responses-wrapper")))
    assert "413" in panel.text and "415" in panel.text
    screenshot(browser, "docs")
    assert_only_service(browser)


def test_slide_job_from_the_page(page, api, live_service):
    if not (live_service["slide_root"] / SLIDE_NAME).is_file():
        pytest.skip("no test slide: it needs the EBHI data, tifffile and imagecodecs")
    assert page.find_element(By.ID, "slides").is_displayed(), "the service has /slides but the page hides it"
    Select(page.find_element(By.ID, "slide-path")).select_by_value(SLIDE_NAME)
    Select(page.find_element(By.ID, "slide-model")).select_by_value(f"model:{CLASSIFIER}")
    key = page.find_element(By.ID, "api-key")
    key.clear()
    key.send_keys(API_KEY)
    page.find_element(By.ID, "slide-submit").click()

    status = page.find_element(By.ID, "slide-status")
    wait(page, 120).until(lambda d: ": done" in status.text or ": failed" in status.text
                          or d.find_element(By.ID, "slides-message").text)
    assert ": done" in status.text, (status.text, page.find_element(By.ID, "slides-message").text)
    job_id = status.text.split()[1].rstrip(":")
    job = api.get(f"/slides/{job_id}").json()
    answer = page.find_element(By.CSS_SELECTOR, "#slide-summary .slide-answer").text
    assert job["summary"]["answer"]["label"] in answer
    fractions = [e.get_attribute("textContent") for e in page.find_elements(By.CSS_SELECTOR, "#slide-summary .bars .name")]
    assert set(fractions) == set(job["summary"]["class_fractions"])
    progress = page.find_element(By.ID, "slide-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") != "0"

    links = {a.text: a.get_attribute("href") for a in page.find_elements(By.CSS_SELECTOR, "#slide-downloads a")}
    assert set(links) == {"Download GeoJSON (QuPath)", "Download CSV"}
    geojson = api.get(links["Download GeoJSON (QuPath)"])
    assert geojson.status_code == 200 and geojson.json()["type"] == "FeatureCollection"
    assert api.get(links["Download CSV"]).text.startswith("x,y,width,height")

    # OpenSeadragon shows the slide from the Deep Zoom routes, the heatmap over it at the slider's opacity.
    wait(page, 60).until(lambda d: d.execute_script(
        "return viewer && viewer.world.getItemCount() === 2 && viewer.world.getItemAt(0).getFullyLoaded()"
        " && viewer.world.getItemAt(1).getFullyLoaded()"))
    tiles = [u for u in page.network_log.drain() if f"/slides/{job_id}/" in u]
    assert any("/slide_files/" in u for u in tiles) and any("/heatmap_files/" in u for u in tiles), tiles
    slider = page.find_element(By.ID, "slide-opacity")
    slider.send_keys(Keys.HOME)
    for _ in range(30):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert page.execute_script("return viewer.world.getItemAt(1).getOpacity()") == pytest.approx(0.30)
    for _ in range(20):
        slider.send_keys(Keys.ARROW_RIGHT)
    screenshot(page, "slides")
    assert api.delete(f"/slides/{job_id}", headers={"X-API-Key": API_KEY}).status_code == 200
    page.execute_script("sessionStorage.clear()")
    assert_only_service(page)
