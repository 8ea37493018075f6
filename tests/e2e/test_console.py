"""The web console in a real browser: headless Chromium (Debian's, driven by Playwright) against the shared
deployment. The browser's fake microphone plays an espeak-ng sentence, so the live path is the real one:
getUserMedia → AudioWorklet → 16 kHz linear16 frames → WebSocket → worker → partials and finals on the page.

The page runs under its real Content-Security-Policy (no ``unsafe-eval``), so the tests wait with
Playwright's locator assertions, never with ``wait_for_function`` (which evaluates a string in the page).
Set HARK_CONSOLE_SCREENSHOT=docs/console.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import SHARED_ENV, Deployment
from tests.e2e.helpers import wer
from tests.processes import Launcher

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: run scripts/ensure-system-packages.sh "
                                                "(CI does) to run the web console's browser tests"),
]  # fmt: skip

SPOKEN = ENGLISH_SENTENCES[3]
LIVE_TIMEOUT_SECONDS = 30
KEY = "console-key-3b9d"


@pytest.fixture(scope="module")
def fake_microphone(audio: AudioFactory) -> Path:
    """The sentence between silences: the fake capture device loops the file, so each pass ends an utterance."""
    out = audio.cache_dir / "console-microphone.wav"
    if not out.exists():
        speech = audio.convert(audio.english(3), "wav", rate=16000)
        subprocess.run(["sox", str(audio.silence(1.0)), str(speech), str(audio.silence(2.5)), str(out)],
                       check=True, timeout=60)  # fmt: skip
    return out


def _expect(locator: Any) -> Any:
    from playwright.sync_api import expect

    return expect(locator)


@pytest.fixture(scope="module")
def browser(fake_microphone: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_microphone}", "--autoplay-policy=no-user-gesture-required",
        ])  # fmt: skip
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def console(browser: Any, shared_deployment: Deployment) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1000, "height": 820})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{shared_deployment.url}/console")
    _expect(page.locator("#status")).not_to_have_attribute("data-state", "loading", timeout=15_000)
    yield page
    page.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_the_page_loads_with_the_served_languages(console: Any) -> None:
    assert console.get_attribute("#status", "data-state") == "idle", console.text_content("#status")
    languages = console.eval_on_selector_all("#language option", "options => options.map(o => o.value)")
    assert {"en", "de", "multi"} <= set(languages), languages  # from GET /ready: tiny.en + base
    assert console.input_value("#language") == "en"


def test_upload_shows_the_transcript(console: Any, audio: AudioFactory) -> None:
    console.set_input_files("#file", str(audio.english(0)))
    console.click("#upload")
    _expect(console.locator("#batch-text")).not_to_be_empty(timeout=30_000)
    assert console.get_attribute("#status", "data-state") == "done", console.text_content("#status")
    assert wer(ENGLISH_SENTENCES[0], console.text_content("#batch-text")) <= 0.4
    assert console.locator("#batch-words span").count() >= 6
    assert "language en" in console.text_content("#batch-meta")


def _wait_for_spoken_final(console: Any) -> list[str]:
    """The finals shown until one matches the spoken sentence (the fake microphone loops it)."""
    deadline = time.monotonic() + LIVE_TIMEOUT_SECONDS
    finals: list[str] = []
    while time.monotonic() < deadline:
        finals = console.locator("#finals .final .text").all_text_contents()
        if any(wer(SPOKEN, text) <= 0.4 for text in finals):
            break
        assert console.get_attribute("#status", "data-state") in ("connecting", "live"), \
            console.text_content("#status")  # fmt: skip
        time.sleep(0.3)
    assert any(wer(SPOKEN, text) <= 0.4 for text in finals), f"no final matching {SPOKEN!r}: {finals}"
    return finals


def test_microphone_streams_partials_and_finals_then_ends_cleanly(console: Any) -> None:
    console.click("#mic-start")
    _wait_for_spoken_final(console)
    assert int(console.get_attribute("#live", "data-partials") or 0) >= 1, "no partial was shown"
    assert any("speech started" in e for e in console.locator("#events li").all_text_contents())
    console.click("#mic-stop")
    _expect(console.locator("#status")).to_have_attribute("data-state", re.compile("^(ended|error)$"), timeout=30_000)
    assert console.get_attribute("#status", "data-state") == "ended", console.text_content("#status")
    assert console.get_attribute("#live", "data-close-code") == "1000"
    assert console.get_attribute("#live", "data-last-final") == "true"
    assert console.is_enabled("#mic-start") and not console.is_enabled("#mic-stop")
    screenshot = os.environ.get("HARK_CONSOLE_SCREENSHOT")
    if screenshot:
        console.screenshot(path=screenshot, full_page=True)


@pytest.fixture(scope="module")
def keyed_url(module_hark: Launcher, shared_deployment: Deployment) -> str:
    """A second API of the shared deployment that requires a key."""
    api = module_hark.start_api(shared_deployment.name, **{**SHARED_ENV, "HARK_API_KEYS": KEY})
    assert api.base_url
    return api.base_url


def test_with_keys_required_the_key_goes_in_headers_and_the_websocket_subprotocol(browser: Any,
                                                                                   keyed_url: str) -> None:  # fmt: skip
    page = browser.new_page()
    try:
        page.goto(f"{keyed_url}/console")  # public: no key needed for the page itself
        _expect(page.locator("#status")).to_have_attribute("data-state", "idle", timeout=15_000)
        assert "en" in page.eval_on_selector_all("#language option", "options => options.map(o => o.value)")
        page.click("#mic-start")  # no key: the refused upgrade is explained
        _expect(page.locator("#status")).to_have_text(re.compile("HTTP 401.*Enter a valid API key"), timeout=15_000)
        page.fill("#api-key", KEY)
        page.locator("#api-key").press("Tab")  # change: the languages are fetched again, now with details
        _expect(page.locator("#status")).to_have_text(re.compile("languages listed are those this server serves"))
        assert "multi" in page.eval_on_selector_all("#language option", "options => options.map(o => o.value)")
        assert page.evaluate("() => sessionStorage.getItem('hark.console.apiKey')") == KEY
        page.click("#mic-start")  # the key as the subprotocol offer ["bearer", key]
        _wait_for_spoken_final(page)
        page.click("#mic-stop")
        _expect(page.locator("#status")).to_have_attribute("data-state", "ended", timeout=30_000)
    finally:
        page.close()
