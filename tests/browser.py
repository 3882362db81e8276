"""Helpers shared by the browser tests: Debian's Chromium under Playwright, and the real app
served by uvicorn on a free port in a thread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from digest.config import Settings
from digest.web import create_app

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "PERSON", "serving"]

# `playwright install` cannot work here: the tests drive the distribution's Chromium.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A person's browser does not announce automation; Playwright's Chromium does. Add this as an
# init script to a context that should behave like a person's.
PERSON = "Object.defineProperty(Navigator.prototype, 'webdriver', { get: () => false });"


@contextmanager
def serving(base: Settings) -> Iterator[Settings]:
    """Run the app under uvicorn on a free port; yields settings whose base_url points at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    settings = base.model_copy(update={"base_url": f"http://127.0.0.1:{sock.getsockname()[1]}"})
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield settings
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
