"""The search page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Skipped where /usr/bin/chromium or the playwright package is absent. Playwright
never downloads a browser here: it drives the system Chromium by path.
Set CLIPLINE_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

from retrieval.serve.config import ServeLimits
from retrieval.serve.app import create_app
from retrieval.serve.backend import load_registry
from tests.retrieval.serve.fakes import ColorBackend, colors_app, draw, running_server, serve_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS_CAPTION = '<img src=x onerror="window.__xss = 1">red'

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser_page():
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1000, "height": 760})
        try:
            yield context.new_page()
        finally:
            context.close()


@contextlib.contextmanager
def opened(page, app):
    """`page` at the root of `app`, served by uvicorn for the block."""
    with running_server(app) as url:
        page.goto(url + "/")
        yield page


def screenshot_dir(tmp_path: Path) -> Path:
    target = Path(os.environ.get("CLIPLINE_SCREENSHOT_DIR", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    return target


IMAGES_LOADED = "() => [...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)"


def result_keys(page) -> list[str]:
    return page.eval_on_selector_all(".result", "cards => cards.map(c => c.dataset.key)")


def search(page, text: str) -> None:
    """Type `text` into the query box and submit it, as a user does."""
    page.fill("#query", text)
    page.press("#query", "Enter")


def test_typed_query_renders_results_and_click_searches_by_image(browser_page, shard: Path, tmp_path: Path) -> None:
    with opened(browser_page, colors_app(shard)) as page:
        page.wait_for_function("() => document.querySelectorAll('#index option').length === 1")
        assert page.inner_text("#index") == "colors (12)"

        search(page, "a red circle")
        page.wait_for_function("() => document.querySelectorAll('.result').length === 12")
        assert result_keys(page)[:2] == ["red_circle", "red_square"]
        first = page.locator(".result").first
        assert first.locator(".caption").inner_text() == "a red circle"
        assert first.locator(".score").inner_text() == "1.000"
        page.wait_for_function(IMAGES_LOADED)
        assert "12 results" in page.inner_text("#status")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "webpage_text_query.png"), full_page=True)

        page.locator(".result[data-key='blue_square'] img").click()  # search by that image
        page.wait_for_function("() => document.querySelector('#query-label').textContent.includes('a blue square')")
        page.wait_for_function("() => document.querySelector('.result').dataset.key === 'blue_square'")
        assert page.locator(".result .score").nth(1).inner_text() == "0.500"  # shares colour or shape

        upload = tmp_path / "query.png"
        draw("yellow", "circle", size=64).save(upload)
        page.set_input_files("#file", str(upload))
        page.wait_for_function("() => document.querySelector('.result').dataset.key === 'yellow_circle'")

        page.select_option("#modality", "text")  # re-runs the last query, returning captions
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('results')")
        assert result_keys(page)[0] == "yellow_circle"


def test_captions_are_shown_as_text_not_markup(browser_page, shard: Path) -> None:
    base = ColorBackend.from_shard(shard)
    keys = [*base.keys, "evil"]
    captions = [*base.captions, XSS_CAPTION]
    backend = ColorBackend(shard, keys, captions, base.image_vectors[[*range(12), 0]],
                           base.text_vectors[[*range(12), 0]], base.stored)
    with opened(browser_page, colors_app(backend)) as page:
        search(page, "red square")
        page.wait_for_selector(".result[data-key='evil']")
        caption = page.locator(".result[data-key='evil'] .caption").inner_text()
        assert caption == XSS_CAPTION
        assert page.locator(".result[data-key='evil'] .noimage").count() == 1  # no stored image for it
        assert page.evaluate("window.__xss") is None


def test_page_asks_for_the_api_key_and_uses_it(browser_page, shard: Path) -> None:
    with opened(browser_page, colors_app(shard, api_key="page-key")) as page:
        page.wait_for_selector("#apikey-box:not([hidden])")
        assert "API key" in page.inner_text("#status")
        page.fill("#apikey", "page-key")
        page.click("#apikey-save")
        page.wait_for_function("() => document.querySelectorAll('#index option').length === 1")
        search(page, "green")
        page.wait_for_function("() => document.querySelectorAll('.result').length === 12")
        assert set(result_keys(page)[:2]) == {"green_circle", "green_square"}
        # Images load too: the key travels in the page's cookie, which <img> requests send.
        page.wait_for_function(IMAGES_LOADED)


def test_bad_query_shows_the_server_message(browser_page, shard: Path) -> None:
    with opened(browser_page, colors_app(shard, limits=ServeLimits(max_text_chars=5))) as page:
        search(page, "a very long query")
        page.wait_for_selector("#status.error")
        assert "limit is 5" in page.inner_text("#status")


def test_real_emoji_index_renders_in_the_page(browser_page, emoji_index: Path, tmp_path: Path) -> None:
    with opened(browser_page, create_app(load_registry([("emoji", emoji_index)]), serve_config())) as page:
        page.wait_for_function("() => document.querySelectorAll('#index option').length === 1")
        search(page, "smiling face with heart eyes")
        page.wait_for_function("() => document.querySelectorAll('.result').length === 24")
        page.wait_for_function(IMAGES_LOADED)
        scores = [float(s) for s in page.locator(".result .score").all_inner_texts()]
        assert scores == sorted(scores, reverse=True)
        page.screenshot(path=str(screenshot_dir(tmp_path) / "webpage_emoji_index.png"), full_page=True)
