"""The page server: tornado for HTTP, server-sent events for the push, watchfiles for changes.

Why these: tornado is a mature asynchronous web server that is already
installed wherever Jupyter is, and holds many long-lived event streams in one
thread; server-sent events are one-way pushes the browser's ``EventSource``
reconnects by itself, all a read-only page needs (no websocket protocol);
watchfiles waits on the kernel's file notifications (inotify), so the server
does no work between pictures, rather than polling every fit's files.

Read-only by construction: every handler is ``GET`` (tornado answers other
methods with 405), and files are reached only through
:class:`~autofit_jaxviz.viewer.fits.FitFolders`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from tornado.iostream import StreamClosedError

from autofit_jaxviz.history import INDEX_NAME, STATUS_NAME
from autofit_jaxviz.viewer.fits import FitFolders

logger = logging.getLogger(__name__)

#: Cookies are shared by every port of a host: the cookie's name carries a tag of the token.
TOKEN_COOKIE = "jaxviz_token"
#: seconds between comment lines on idle event streams (finds closed connections)
HEARTBEAT_SECONDS = 15.0
#: seconds between checks that running fits' processes still exist
LIVENESS_SECONDS = 5.0
#: seconds between two full looks through the folder (a backstop for lost events)
RESCAN_SECONDS = 60.0


def host_name(host_header: str) -> str:
    """``localhost:8765`` -> ``localhost``; ``[::1]:8765`` -> ``[::1]``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.split(":", 1)[0]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class ViewerState:
    """The fits' summaries, the open event streams, and pushing a change to them."""

    def __init__(self, folders: FitFolders) -> None:
        self.folders = folders
        self.fits: dict[str, Path] = {}
        self.summaries: dict[str, dict[str, Any]] = {}
        self.streams: set[EventsHandler] = set()
        self._unreadable: set[str] = set()

    def rescan(self, found: dict[str, Path] | None = None) -> bool:
        """Find every fit again (or take ``found``); True if anything the page shows changed."""
        found = self.folders.scan() if found is None else found
        gone = [fit_id for fit_id in self.fits if fit_id not in found]
        self.fits = found
        return self.refresh([*found, *gone])

    def add_under(self, folder: str) -> list[str]:
        """A folder appeared: the fits inside it (files written before the watch on
        a new folder was in place raise no event of their own)."""
        added = []
        for fit_id, path in self.folders.scan(folder).items():
            if fit_id not in self.fits:
                self.fits[fit_id] = path
                added.append(fit_id)
        return added

    def refresh(self, fit_ids: list[str]) -> bool:
        changed = False
        for fit_id in fit_ids:
            folder = self.fits.get(fit_id)
            try:
                summary = None if folder is None else self.folders.summary(fit_id, folder)
            except Exception:  # noqa: BLE001 - one odd fit never stops the page
                if fit_id not in self._unreadable:
                    self._unreadable.add(fit_id)
                    logger.warning("the status of fit %s cannot be read; it is left out",
                                   fit_id, exc_info=True)
                summary = None
            if summary is not None:
                try:
                    json.dumps(summary, allow_nan=False)
                except ValueError:  # a value the checks missed: leave the fit out
                    summary = None
            old = self.summaries.get(fit_id)
            if summary is None:
                changed |= self.summaries.pop(fit_id, None) is not None
            elif old is None or _without_clock(old) != _without_clock(summary):
                self.summaries[fit_id] = summary
                changed = True
            else:
                self.summaries[fit_id] = summary  # elapsed time moves on, silently
        return changed

    def payload(self) -> str:
        fits = sorted(self.summaries.values(), key=lambda s: -(s.get("started") or 0))
        return json.dumps({"fits": fits}, allow_nan=False)

    def push(self) -> None:
        """Every stream gets the fit list now; a stream still sending an older one
        gets only the newest when it is done (a slow browser never holds up the rest)."""
        message = f"event: fits\ndata: {self.payload()}\n\n"
        for stream in list(self.streams):
            stream.offer(message)


def _without_clock(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "elapsed"}


class BaseHandler(tornado.web.RequestHandler):
    """Checks every request: the Host header (no DNS rebinding onto a loopback
    page) and, when the page has one, the access token."""

    def initialize(self, state: ViewerState, token: str | None, hosts: frozenset[str],
                   cookie: str) -> None:
        self.state = state
        self.token = token
        self.hosts = hosts
        self.cookie = cookie

    def prepare(self) -> None:
        # the host name only: an SSH forward to another local port keeps it
        if self.hosts and host_name(self.request.host) not in self.hosts:
            raise tornado.web.HTTPError(403, "unexpected Host header")
        if self.token is not None:
            given = self.get_query_argument("token", None) or self.get_cookie(self.cookie)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                raise tornado.web.HTTPError(403, "missing or wrong access token")

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
                        "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")  # no traceback, no paths


class PageHandler(BaseHandler):
    def get(self) -> None:
        if self.token is not None and self.get_query_argument("token", None):
            # later requests (pictures, the event stream) carry it as a cookie
            self.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(resources.files("autofit_jaxviz.viewer").joinpath("page.html").read_bytes())


class NoIconHandler(BaseHandler):
    def get(self) -> None:
        self.set_status(204)  # browsers ask; an answer keeps the log free of 404s
        self.finish()


class FitsHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(self.state.payload())


class IndexHandler(BaseHandler):
    def get(self) -> None:
        fit_id = self.get_query_argument("fit", None)
        entries = self.state.folders.index(fit_id)
        if entries is None:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"entries": entries,
                                "parameter_names": self.state.folders.parameter_names(fit_id)},
                               allow_nan=False))


class PictureHandler(BaseHandler):
    def get(self) -> None:
        path = self.state.folders.picture(self.get_query_argument("fit", None),
                                          self.get_query_argument("file", None))
        if path is None:
            raise tornado.web.HTTPError(404)
        try:
            # no link swapped in after the check: the file itself, or nothing
            # (and never a FIFO or device swapped in, which would block the server)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise tornado.web.HTTPError(404)
                data = f.read()
        except OSError:  # dropped by retention since it was listed
            raise tornado.web.HTTPError(404) from None
        self.set_header("Content-Type", "image/png")
        # a number is never reused for another picture
        self.set_header("Cache-Control", "private, max-age=31536000, immutable")
        self.finish(data)


class EventsHandler(BaseHandler):
    """One browser's event stream: the fit list now, then again at every change.

    Latest-only, like the render worker: while a message is still on its way
    to a slow browser, newer ones replace each other and only the newest
    follows, so a stalled connection holds one message, not a growing queue.
    """

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.closed = asyncio.Event()
        self.waiting: str | None = None
        self.sending = False
        self.state.streams.add(self)
        try:
            self.write("retry: 1000\n\n")  # reconnect after a second, if the server restarts
            self.offer(f"event: fits\ndata: {self.state.payload()}\n\n")
            while not self.closed.is_set():
                try:
                    await asyncio.wait_for(self.closed.wait(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    if not self.sending:
                        self.offer(": heartbeat\n\n")
        finally:
            self.state.streams.discard(self)

    def offer(self, message: str) -> None:
        self.waiting = message
        if not self.sending:
            self.sending = True
            asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self.waiting is not None and not self.closed.is_set():
                message, self.waiting = self.waiting, None
                self.write(message)
                await self.flush()
        except StreamClosedError:
            self.closed.set()
        finally:
            self.sending = False

    def on_connection_close(self) -> None:
        self.closed.set()


def make_app(state: ViewerState, *, token: str | None, hosts: frozenset[str],
             port: int) -> tornado.web.Application:
    """The page's routes; ``hosts``: the Host names accepted (empty: any)."""
    # named after the token: two pages forwarded to two local ports share cookies
    tag = hashlib.sha256((token or "").encode()).hexdigest()[:16]
    options = {"state": state, "token": token, "hosts": hosts, "cookie": f"{TOKEN_COOKIE}_{tag}"}
    return tornado.web.Application([
        (r"/", PageHandler, options),
        (r"/favicon.ico", NoIconHandler, options),
        (r"/api/fits", FitsHandler, options),
        (r"/api/index", IndexHandler, options),
        (r"/picture", PictureHandler, options),
        (r"/events", EventsHandler, options),
    ], compress_response=False, xsrf_cookies=False)


def _worth_a_look(change: Any, path: str) -> bool:
    """A fit's status or index replaced, or a new folder (which may hold a fit)."""
    from watchfiles import Change

    name = os.path.basename(path)
    if name in (STATUS_NAME, INDEX_NAME):
        return True
    return change == Change.added and not name.startswith(".") and os.path.isdir(path)


async def watch(state: ViewerState, stop: asyncio.Event, poll: float | None = None) -> None:
    """Push a change whenever a fit's status or index is replaced (inotify via
    watchfiles; ``poll`` seconds: stat the files instead, for network file
    systems whose writes from other machines raise no notification)."""
    from watchfiles import awatch

    options: dict[str, Any] = {"step": 50, "debounce": 200, "ignore_permission_denied": True}
    if poll is not None:
        options.update(force_polling=True, poll_delay_ms=int(poll * 1000))
    while not stop.is_set():
        try:
            await _watch_changes(state, stop, awatch, options)
            return
        except Exception as error:  # noqa: BLE001 - e.g. the inotify watch limit reached
            if options.get("force_polling"):
                logger.warning("watching %s failed (%s); changes are found by the full "
                               "rescan every %.0f s only", state.folders.root, error,
                               RESCAN_SECONDS)
                return
            logger.warning("file notifications for %s failed (%s: %s); looking for changes "
                           "every second instead", state.folders.root, type(error).__name__,
                           error)
            options.update(force_polling=True, poll_delay_ms=1000)


async def _watch_changes(state: ViewerState, stop: asyncio.Event, awatch: Any,
                         options: dict[str, Any]) -> None:
    async for changes in awatch(state.folders.root, watch_filter=_worth_a_look,
                                stop_event=stop, recursive=True, **options):
        try:
            ids: set[str] = set()
            for _, path in changes:
                if os.path.basename(path) in (STATUS_NAME, INDEX_NAME):
                    fit_id = state.folders.fit_id(os.path.dirname(path))
                    if fit_id is not None and fit_id not in state.fits:
                        ids.update(state.add_under(os.path.dirname(path)))
                    elif fit_id is not None:
                        ids.add(fit_id)
                else:
                    ids.update(state.add_under(path))
            if state.refresh(sorted(ids)):
                state.push()
        except Exception:  # noqa: BLE001 - the page goes on with the next change
            logger.warning("a change under %s could not be read", state.folders.root,
                           exc_info=True)


async def check_liveness(state: ViewerState, stop: asyncio.Event) -> None:
    """A fit killed outright never writes ``failed``: notice its process is gone.
    Every ``RESCAN_SECONDS`` the whole folder is looked through again too, in
    case a notification was lost (a full inotify queue)."""
    waited = 0.0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), LIVENESS_SECONDS)
        except TimeoutError:
            waited += LIVENESS_SECONDS
            try:
                if waited >= RESCAN_SECONDS:
                    waited = 0.0
                    # off the event loop: a large tree on a network file system is slow
                    before = set(state.fits)
                    found = await asyncio.to_thread(state.folders.scan)
                    # a fit the watch added while the scan ran is not gone
                    found.update({k: v for k, v in state.fits.items() if k not in before})
                    changed = state.rescan(found)
                else:
                    changed = state.refresh(list(state.fits))
                if changed:
                    state.push()
            except Exception:  # noqa: BLE001 - try again at the next check
                logger.warning("the fits under %s could not be read", state.folders.root,
                               exc_info=True)


async def watch_parent(pid: int, stop: asyncio.Event) -> None:
    """Started by a fit: end with the process that started the page."""
    while not stop.is_set():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stop.set()
            return
        except PermissionError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def serve(root: str | os.PathLike[str], *, host: str, port: int, token: str | None,
                announce: Any, parent_pid: int | None = None,
                stop: asyncio.Event | None = None, poll: float | None = None) -> None:
    """Serve the page until ``stop`` is set (or the parent process is gone).
    ``announce(url)`` is called once the socket listens."""
    state = ViewerState(FitFolders(root))
    state.rescan()
    sockets = tornado.netutil.bind_sockets(port, address=host)
    bound = sockets[0].getsockname()[1]
    # a loopback page without a token accepts only its own Host names: a web
    # site cannot reach it by pointing a name of its own at 127.0.0.1
    hosts = frozenset({"localhost", "127.0.0.1", "[::1]"}
                      if is_loopback(host) and token is None else ())
    server = tornado.httpserver.HTTPServer(make_app(state, token=token, hosts=hosts,
                                                    port=bound))
    server.add_sockets(sockets)
    stop = stop or asyncio.Event()
    tasks = [asyncio.create_task(watch(state, stop, poll)),
             asyncio.create_task(check_liveness(state, stop))]
    if parent_pid is not None:
        tasks.append(asyncio.create_task(watch_parent(parent_pid, stop)))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
    announce(url)
    try:
        await stop.wait()
    finally:
        server.stop()
        for stream in list(state.streams):
            stream.closed.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
