"""A live page served from a thread of the test, and a reader of its event stream."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from autofit_jaxviz.history import PictureHistory, history_folder
from autofit_jaxviz.payload import BestFit
from autofit_jaxviz.viewer.server import serve


@contextlib.contextmanager
def served(root, *, host: str = "127.0.0.1", token: str | None = None) -> Iterator[str]:
    """Serve ``root`` on a free port; yields the page's address."""
    ready = threading.Event()
    address: dict[str, str] = {}
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()

        def announce(url: str) -> None:
            address["url"] = url
            ready.set()

        await serve(root, host=host, port=0, token=token, announce=announce, stop=stop)

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # noqa: BLE001 - reported to the test
            failure.append(error)
            ready.set()

    thread = threading.Thread(target=run, name="test-viewer", daemon=True)
    thread.start()
    assert ready.wait(30), "the page did not start listening"
    if failure:
        raise failure[0]
    try:
        yield address["url"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the page did not stop"
        loop.close()


def get(url: str, path: str, *, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A raw GET (the path is sent exactly as given: no normalisation of ``..``)."""
    status, body, _ = get_with_headers(url, path, headers=headers)
    return status, body


def get_with_headers(url: str, path: str, *, headers: dict[str, str] | None = None
                     ) -> tuple[int, bytes, dict[str, str]]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


class EventReader:
    """The page's event stream, read as a browser's EventSource would."""

    def __init__(self, url: str, query: str = "", timeout: float = 30) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port,
                                                     timeout=timeout)
        self.connection.request("GET", "/events" + query)
        self.response = self.connection.getresponse()
        assert self.response.status == 200, self.response.status
        assert self.response.getheader("Content-Type") == "text/event-stream"

    def next_fits(self, deadline: float | None = None) -> list[dict]:
        """The fit list of the next ``fits`` event (blocks up to the socket's
        timeout per read, and past ``deadline``, a ``time.monotonic()``, not at all)."""
        event, data = None, None
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("no fits event before the deadline")
            line = self.response.fp.readline().decode()
            if not line:
                raise EOFError("the event stream closed")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event == "fits" and data is not None:
                return json.loads(data)["fits"]

    def close(self) -> None:
        self.connection.close()


def real_png(width: int, tag: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (width, 40), (tag * 20 % 255, 100, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_fit(root, relative: str, pictures: int, name: str = "fit") -> PictureHistory:
    image = root / relative / "image" / "fit.png"
    history = PictureHistory(history_folder(image), name=name)
    for i in range(pictures):
        history.record(real_png(60 + i, i), BestFit(-100.0 + i, np.array([i, 1.0]), 10 * i))
    return history
