"""End to end in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium; no browser
download): upload a phantom radiograph, click the 8 landmarks, drag one, screen, read the probability; and in
annotation mode, place a subject's landmarks and save them to landmarks.csv. Screenshots land in tmp_path."""

import csv
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import subject_upload
from osteoscreen.core.landmarks import LANDMARKS
from osteoscreen.data.dataset import single_image_dataset
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.screening import predict
from osteoscreen.web.app import GROUP_NAMES, create_app

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or \
    "/usr/bin/chromedriver"


class Server:
    """uvicorn serving an app on a free loopback port, in a thread."""

    def __init__(self, app):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1150"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = tmp_path_factory.mktemp("downloads")
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(driver.downloads)})
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 60):
    """Wait until the JavaScript expression is truthy; returns its value."""
    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return {script};"))


def click_landmarks(driver, landmarks: dict[str, list[float]]) -> None:
    """Click each landmark, in the order the page asks for them, at its image coordinates."""
    image = driver.find_element(By.ID, "radiograph")
    for name in LANDMARKS:
        assert wait_for(driver, "window.osteoscreen.current") == name
        group, side = name.split("_")
        assert f"Click the {side} {GROUP_NAMES[group]}" in driver.find_element(By.ID, "prompt").text
        x, y = landmarks[name]
        box = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                    "return [r.width, r.height, window.osteoscreen.width, window.osteoscreen.height];",
                                    image)
        dx = (x + 0.5) * box[0] / box[2] - box[0] / 2  # offsets from the element's centre
        dy = (y + 0.5) * box[1] / box[3] - box[1] / 2
        ActionChains(driver).move_to_element_with_offset(image, round(dx), round(dy)).click().perform()


def page_landmarks(driver) -> np.ndarray:
    placed = driver.execute_script("return window.osteoscreen.landmarks;")
    return np.array([placed[name] for name in LANDMARKS])


def test_upload_click_drag_and_screen(browser, screening_model, small_png_cohort, tmp_path):
    data, landmarks, _ = subject_upload(small_png_cohort)
    image_file = tmp_path / "radiograph.png"
    image_file.write_bytes(data)
    with Server(create_app(model_dir=screening_model)) as url:
        browser.get(url)
        browser.find_element(By.ID, "file-input").send_keys(str(image_file))
        wait_for(browser, "window.osteoscreen.width > 0")
        click_landmarks(browser, landmarks)
        scale = browser.execute_script("return window.osteoscreen.scale;")
        expected = np.array([landmarks[name] for name in LANDMARKS])
        np.testing.assert_allclose(page_landmarks(browser), expected, atol=1.0 / scale + 0.5)
        assert "All 8 placed" in browser.find_element(By.ID, "prompt").text

        # drag the right premolar point 30 screen pixels to the right: it follows
        before = page_landmarks(browser)
        marker = browser.find_element(By.CSS_SELECTOR, "#overlay circle[data-name='premolar_right']")
        ActionChains(browser).click_and_hold(marker).move_by_offset(30, 0).release().perform()
        moved = page_landmarks(browser)
        row = LANDMARKS.index("premolar_right")
        assert moved[row, 0] - before[row, 0] == pytest.approx(30 / scale, abs=2 / scale)
        np.testing.assert_array_equal(np.delete(moved, row, 0), np.delete(before, row, 0))

        browser.find_element(By.ID, "screen-button").click()
        wait_for(browser, "!document.getElementById('result').hidden")
        shown = browser.find_element(By.ID, "probability").text
        browser.find_element(By.ID, "download-csv").click()
        browser.save_screenshot(str(tmp_path / "screening-result.png"))

    # the page's probability is what `osteoscreen predict` gives for the page's final landmarks
    points = tmp_path / "points.json"
    points.write_text(json.dumps({name: list(p) for name, p in zip(LANDMARKS, moved.tolist(), strict=True)}))
    rows = list(csv.DictReader(open(predict(Model.load(screening_model), single_image_dataset(image_file, points),
                                            tmp_path / "out", figures=False))))
    assert shown == f"p(osteoporosis) = {float(rows[0]['p_osteoporosis']):.3f}"
    assert browser.find_element(By.ID, "decision").text.startswith(f"→ {rows[0]['decision']}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#attention .bar")) == 4
    patches = browser.find_elements(By.CSS_SELECTOR, "#patches img")
    assert len(patches) == 8 and all(browser.execute_script("return arguments[0].naturalWidth;", p) == 100
                                     for p in patches)
    downloaded = browser.downloads / "landmarks.csv"
    WebDriverWait(browser, 10).until(lambda _: downloaded.exists())
    assert [r["landmark"] for r in csv.DictReader(open(downloaded))] == list(LANDMARKS)


def test_annotation_mode_saves_the_clicked_landmarks(browser, annotation_dataset, tmp_path):
    data_dir, removed = annotation_dataset
    with Server(create_app(data_dir=data_dir)) as url:
        browser.get(url)
        wait_for(browser, "window.osteoscreen.width > 0 && window.osteoscreen.subject === 0")
        click_landmarks(browser, removed)
        browser.find_element(By.ID, "save-button").click()
        status = wait_for(browser, "document.getElementById('status').textContent.startsWith('saved') && "
                                   "document.getElementById('status').textContent")
        browser.save_screenshot(str(tmp_path / "annotation-saved.png"))
    scale = browser.execute_script("return window.osteoscreen.scale;")
    subject_id = subject_upload(data_dir, 0)[2]
    assert status.startswith(f"saved {subject_id} to landmarks.csv (4 of 4 subjects complete)")
    rows = {r["landmark"]: [float(r["x"]), float(r["y"])] for r in csv.DictReader(open(data_dir / "landmarks.csv"))
            if r["subject_id"] == subject_id}
    np.testing.assert_allclose(np.array([rows[n] for n in LANDMARKS]), np.array([removed[n] for n in LANDMARKS]),
                               atol=1.0 / scale + 0.5)
    assert len(list(Path(data_dir).glob("landmarks.csv.*.bak"))) == 1


def suggested_classes(driver) -> dict[str, str]:
    """{landmark: the marker's suggestion class ("suggested", "flagged" or "")}."""
    return driver.execute_script(
        "const out = {}; for (const c of document.querySelectorAll('#overlay circle')) out[c.dataset.name] = "
        "c.classList.contains('flagged') ? 'flagged' : c.classList.contains('suggested') ? 'suggested' : '';"
        "return out;")


def test_suggest_marks_unsure_points_and_saves_only_after_the_user_checked_them(browser, planted, planted_lmodel,
                                                                                 tmp_path):
    root, model = planted
    data_dir = Path(shutil.copytree(root, tmp_path / "data"))
    expected = model.suggest(data_dir / "images" / "S0.png")
    with Server(create_app(data_dir=data_dir, landmark_model_dir=planted_lmodel)) as url:
        browser.get(url)
        wait_for(browser, "window.osteoscreen.width > 0 && window.osteoscreen.subject === 0")
        browser.find_element(By.ID, "suggest-button").click()
        wait_for(browser, "Object.keys(window.osteoscreen.suggested).length === 8")
        np.testing.assert_allclose(page_landmarks(browser), expected.points, atol=0.005)
        assert suggested_classes(browser) == {name: "flagged" if flagged else "suggested"
                                              for name, flagged in zip(LANDMARKS, expected.flagged, strict=True)}
        save, review = browser.find_element(By.ID, "save-button"), browser.find_element(By.ID, "review-check")
        assert review.is_displayed() and not save.is_enabled()  # not saved before the user has checked them

        before = page_landmarks(browser)
        marker = browser.find_element(By.CSS_SELECTOR, "#overlay circle[data-name='angle_left']")
        ActionChains(browser).click_and_hold(marker).move_by_offset(0, 20).release().perform()
        moved = page_landmarks(browser)
        assert suggested_classes(browser)["angle_left"] == ""  # a moved point is the user's, not a suggestion
        review.click()
        assert save.is_enabled()
        browser.save_screenshot(str(tmp_path / "annotation-suggested.png"))
        save.click()
        wait_for(browser, "document.getElementById('status').textContent.startsWith('saved')")
    row = LANDMARKS.index("angle_left")
    np.testing.assert_array_equal(np.delete(moved, row, 0), np.delete(before, row, 0))
    assert moved[row, 1] > before[row, 1]
    rows = {r["landmark"]: [float(r["x"]), float(r["y"])] for r in csv.DictReader(open(data_dir / "landmarks.csv"))
            if r["subject_id"] == "S0"}
    np.testing.assert_allclose(np.array([rows[n] for n in LANDMARKS]), moved, atol=0.005)


def test_screening_straight_from_checked_suggested_points(browser, planted, planted_lmodel, screening_model, tmp_path):
    image_file = planted[0] / "images" / "S1.png"
    with Server(create_app(model_dir=screening_model, landmark_model_dir=planted_lmodel)) as url:
        browser.get(url)
        browser.find_element(By.ID, "file-input").send_keys(str(image_file))
        wait_for(browser, "window.osteoscreen.width > 0")
        browser.find_element(By.ID, "suggest-button").click()
        wait_for(browser, "Object.keys(window.osteoscreen.suggested).length === 8")
        screen = browser.find_element(By.ID, "screen-button")
        assert not screen.is_enabled()
        browser.find_element(By.ID, "review-check").click()
        screen.click()
        wait_for(browser, "!document.getElementById('result').hidden")
        shown = browser.find_element(By.ID, "probability").text
        source = browser.find_element(By.ID, "landmark-source").text
        points = page_landmarks(browser)
    assert source.startswith("Screened from 8 suggested landmark(s) the user checked")
    landmarks = tmp_path / "points.json"
    landmarks.write_text(json.dumps({name: list(p) for name, p in zip(LANDMARKS, points.tolist(), strict=True)}))
    rows = list(csv.DictReader(open(predict(Model.load(screening_model), single_image_dataset(image_file, landmarks),
                                            tmp_path / "out", figures=False))))
    assert shown == f"p(osteoporosis) = {float(rows[0]['p_osteoporosis']):.3f}"


def test_a_dicom_screening_downloads_its_sr_and_shows_the_pacs_answer(browser, screening_model, small_dicom_cohort,
                                                                      tmp_path):
    import pydicom

    from osteoscreen.deploy.pacs import dimse_destination

    data, landmarks, _ = subject_upload(small_dicom_cohort)
    image_file = tmp_path / "radiograph.dcm"
    image_file.write_bytes(data)
    with socket.socket() as probe:  # a port nobody listens on: the PACS is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    destination = dimse_destination(f"PACS@127.0.0.1:{port}", timeout_s=2)
    with Server(create_app(model_dir=screening_model, destination=destination)) as url:
        browser.get(url)
        browser.find_element(By.ID, "file-input").send_keys(str(image_file))
        wait_for(browser, "window.osteoscreen.width > 0")
        click_landmarks(browser, landmarks)
        browser.find_element(By.ID, "screen-button").click()
        wait_for(browser, "!document.getElementById('dicom-actions').hidden")
        assert browser.find_element(By.ID, "send-pacs").is_displayed()
        browser.find_element(By.ID, "download-sr").click()
        downloaded = browser.downloads / "osteoscreen-upload.sr.dcm"
        WebDriverWait(browser, 30).until(lambda _: downloaded.exists())
        browser.find_element(By.ID, "send-pacs").click()
        answer = wait_for(browser, "document.getElementById('pacs-answer').textContent.includes('accepted') && "
                                   "document.getElementById('pacs-answer').textContent")
        browser.execute_script("document.getElementById('pacs-answer').scrollIntoView();")
        browser.save_screenshot(str(tmp_path / "dicom-results.png"))
    assert answer.startswith(f"PACS@127.0.0.1:{port} accepted 0 of 2 file(s). Not accepted: upload.")
    assert pydicom.dcmread(downloaded).StudyInstanceUID == pydicom.dcmread(image_file).StudyInstanceUID
