"""The run report and the review page in a real browser (Debian's headless Chromium through selenium):
no console errors, every image and video loads, approve/reject reach the ledger and the manifest, and a file
name holding `<script>` is shown as text. Without a browser these fail under CI (CI=true), never pass."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from face_media import carphone, write_wav16
from runkit import lipsync, write_config

from pipeline.report.server import ReviewServer, run_file
from pipeline.run.reviews import Decision, Reviews
from pipeline.speech import synth_speech

HOSTILE_NAME = "clip <script>alert(1)</script>.mp4".replace("/", "")  # a file name cannot hold "/"


def _browser_paths() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "headless Chromium is needed: apt-get install -y chromium chromium-driver (.ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    shutil.copy(carphone(), folder / HOSTILE_NAME)
    write_wav16(folder / "voice.wav", synth_speech(4.0, sample_rate=48000, seed=3))
    config = write_config(folder, [{"id": "talk", "video": HOSTILE_NAME, "audio": "voice.wav"}])
    done = lipsync("run", str(config), "--rehearse")
    assert done.returncode == 0, done.stderr
    assert "report: " in done.stderr
    return folder / "out"


def _severe(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _media_loaded(driver) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('video')].every(v => v.readyState >= 1 || v.error)"
        )
    )
    return driver.execute_script("""
        return {images: [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0]),
                videos: [...document.querySelectorAll('video')].map(v => [v.getAttribute('src'), v.readyState >= 1,
                                                                          v.error ? v.error.code : null]),
                svgs: document.querySelectorAll("svg").length};""")


def test_the_static_report_renders_every_image_and_video_without_console_errors(browser, run_dir):
    report = run_dir / "report.html"
    assert report.is_file()
    browser.get(report.as_uri())
    loaded = _media_loaded(browser)
    assert loaded["images"] and all(ok for _, ok in loaded["images"]), loaded["images"]
    assert {"poster frame", "contact sheet"} <= {alt for alt, _ in loaded["images"]}
    assert len(loaded["videos"]) == 2 and all(ok for _, ok, _ in loaded["videos"]), loaded["videos"]
    assert loaded["svgs"] >= 2  # the waveform and the mouth-vs-envelope plots
    assert _severe(browser) == []
    if os.environ.get("LIPSYNC_SCREENSHOT"):
        browser.save_screenshot(os.environ["LIPSYNC_SCREENSHOT"])


def test_a_file_name_with_a_script_tag_is_shown_as_text(browser, run_dir):
    browser.get((run_dir / "report.html").as_uri())
    assert "<script>alert(1)" in browser.find_element("tag name", "body").text
    assert browser.execute_script("return document.querySelectorAll('script').length") == 0
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)" in text


def test_reject_with_a_note_and_approve_round_trip_into_the_ledger_and_manifest(browser, run_dir):
    from selenium.webdriver.common.by import By

    with ReviewServer(run_dir) as server:
        assert server.host == "127.0.0.1"
        browser.get(server.url)
        assert all(ok for _, ok in _media_loaded(browser)["images"])
        note = browser.find_element(By.CSS_SELECTOR, '[data-job="talk"] .note')
        note.send_keys('lips drift <b>late</b> & the "ending"')
        browser.find_element(By.CSS_SELECTOR, '[data-job="talk"] .reject').click()
        shown = browser.find_element(By.CSS_SELECTOR, '[data-job="talk"] .decision-rejected').text
        assert shown == 'rejected: lips drift <b>late</b> & the "ending"'
        review = Reviews(run_dir).all()["talk"]
        assert review.decision is Decision.REJECTED and review.note == 'lips drift <b>late</b> & the "ending"'
        manifest = json.loads((run_dir / "talk" / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["review"]["decision"] == "rejected"
        browser.find_element(By.CSS_SELECTOR, '[data-job="talk"] .approve').click()
        assert browser.find_element(By.CSS_SELECTOR, '[data-job="talk"] .decision-approved').text == "approved"
        assert Reviews(run_dir).all()["talk"].decision is Decision.APPROVED
        assert _severe(browser) == []
    status = lipsync("status", str(run_dir))
    assert "review: talk approved" in status.stdout


def test_the_review_server_serves_only_files_inside_the_run(run_dir, tmp_path):
    import httpx

    (run_dir.parent / "secret.txt").write_text("outside", encoding="utf-8")
    with ReviewServer(run_dir) as server:
        ok = httpx.get(server.url + "talk/final.mp4")
        assert ok.status_code == 200 and ok.content == (run_dir / "talk" / "final.mp4").read_bytes()
        for bad in ("../secret.txt", "%2e%2e/secret.txt", "talk/../../secret.txt", "%2Fetc%2Fpasswd"):
            with httpx.Client() as client:
                got = client.send(client.build_request("GET", server.url + bad))
            assert got.status_code == 404, bad
            assert b"outside" not in got.content
    assert run_file(run_dir, "/etc/passwd") is None and run_file(run_dir, "../secret.txt") is None
