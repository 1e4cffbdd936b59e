"""Browser tests: headless Chromium (Debian's ``chromium``) driven by Playwright, against a
uvicorn server over the demo data dir. Without chromium or Playwright they skip, with a message
saying what to install; under ``CI=true`` they fail instead (CI installs both)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from streamprov.api import create_app
from streamprov.app import App, Settings, replay_engine
from tests.observe.demo import Demo, build_demo
from tests.replay.streams import catalog_for_tests

CHROMIUM = os.environ.get("STREAMPROV_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _missing(what: str) -> None:
    message = (f"browser tests need {what} (apt-get install -y chromium; pip install "
               "playwright)")
    if os.environ.get("CI") == "true":
        pytest.fail(message + " - required under CI=true", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return build_demo(tmp_path_factory.getbasetemp())


# module scope: Playwright's sync API runs an event loop in this thread while it is open, and
# asyncio.run (other tests' ASGI clients) refuses to start inside one
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        _missing(f"Debian's chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package playwright")
    path = CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def served(demo: Demo) -> Iterator[str]:
    """Base URL of ``streamprov serve``'s app over the demo data dir."""
    app = App(Settings.resolve(demo.data_dir))
    catalog = catalog_for_tests(demo.data_dir)
    api = create_app(app, catalog, replay_engine(app, catalog))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    app.close()
