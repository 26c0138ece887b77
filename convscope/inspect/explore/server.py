"""``convscope serve``: the explorer on a local web server, with uploads run by the NumPy engine.

Standard library only (``http.server.ThreadingHTTPServer``).  Routes:

* ``GET /``: the explorer page (the same page as ``convscope explore``, with an upload zone and a
  drawing canvas);
* ``POST /api/predict``: the request body is an image file's bytes; the answer is JSON
  ``{"top": [{"label", "probability"}, ...], "labels", "indices", "probabilities", "inverted",
  "image"}``: ``top`` is what ``convscope predict`` prints for that file (the same code path),
  ``image`` the page's record of it (every layer's output, saliency, Grad-CAM).

Safety: it listens on 127.0.0.1 unless a host is given; a request whose Host header names
neither an IP address, ``localhost`` nor that host is refused (403: a web page elsewhere cannot
reach the server through DNS rebinding); uploads are limited in bytes (413 before reading) and in
pixels (413 after reading only the image's header); a bad upload is a 4xx with a one-line JSON
``{"error": ...}`` and the server goes on serving; a client that stalls is dropped after 30 s.
:class:`GuardedServer` holds these rules for every convscope server (``train --serve``'s
live view, live.py, is the other one).  The engine's layers keep per-call caches, so
requests are computed one at a time under a lock; the threads only overlap the I/O.
"""

from __future__ import annotations

import io
import ipaddress
import json
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from ...errors import DataError
from .build import explorer_html
from .collect import image_record, randomized_copy
from .source import Target, build_explorer

__all__ = ["GuardedServer", "ExplorerServer", "Refused", "make_server", "MAX_UPLOAD_BYTES",
           "MAX_UPLOAD_PIXELS", "PAGE_ROUTES"]

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
#: The paths that answer the explorer page.
PAGE_ROUTES = ("/", "/index.html", "/explore.html")
_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
            "TIFF": ".tif"}


class Refused(Exception):
    """A request answered with a 4xx: ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _host_name(header: str) -> str:
    """The host part of a Host header ('[::1]:8000' -> '::1', 'a.b:80' -> 'a.b')."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class GuardedServer(ThreadingHTTPServer):
    """What every convscope server shares: the Host check, bounded requests, one-line errors.

    A subclass answers ``get(route)`` with (content type, body) and, for the routes in
    ``post_routes``, ``post(route, query, body)`` with a JSON-able answer; either raises
    :class:`Refused` for a 4xx.  A POST elsewhere is refused before its body is read, and a body
    over ``max_bytes`` too; a client that stalls for ``_Handler.timeout`` seconds is dropped.
    """

    daemon_threads = True
    post_routes: tuple[str, ...] = ()

    def __init__(self, host: str = "127.0.0.1", port: int = 8000, *,
                 max_bytes: int = MAX_UPLOAD_BYTES,
                 log: Callable[[str], None] | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.log = log
        self.allowed = {"localhost", host.lower()}
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def host_ok(self, header: str | None) -> bool:
        """Whether a Host header names this server: an IP address, localhost or the host."""
        if not header:
            return False
        name = _host_name(header)
        return _is_ip(name) or name in self.allowed

    def get(self, route: str) -> tuple[str, bytes]:
        """(content type, body) of ``GET route``; raises :class:`Refused`."""
        raise Refused(HTTPStatus.NOT_FOUND, f"no page {route!r}; the explorer is at /")

    def post(self, route: str, query: str, body: bytes) -> Any:
        """The JSON answer to ``POST route?query`` (a route of ``post_routes``)."""
        raise Refused(HTTPStatus.NOT_FOUND, f"no API {route!r}")


class ExplorerServer(GuardedServer):
    """The explorer of one model; ``serve_forever()`` / ``shutdown()`` as any socketserver."""

    post_routes = ("/api/predict",)

    def __init__(self, target: Target, host: str = "127.0.0.1", port: int = 8000, *,
                 max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS,
                 log: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.max_pixels = int(max_pixels)
        self.lock = threading.Lock()
        self.page = explorer_html(build_explorer(target, live=True)).encode("utf-8")
        self.twin = randomized_copy(target.saved.model)
        super().__init__(host, port, max_bytes=max_bytes, log=log)

    def get(self, route: str) -> tuple[str, bytes]:
        if route in PAGE_ROUTES:
            return "text/html; charset=utf-8", self.page
        return super().get(route)

    def post(self, route: str, query: str, body: bytes) -> Any:
        try:
            k = int(parse_qs(query).get("k", ["3"])[0])
            if k < 1:
                raise ValueError
        except ValueError:
            raise Refused(HTTPStatus.BAD_REQUEST, "k must be a whole number >= 1") from None
        return self.predict(body, k)

    def predict(self, body: bytes, top_k: int = 3) -> dict[str, Any]:
        """The answer to ``POST /api/predict`` for an image file's bytes (raises Refused)."""
        from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - Pillow is optional for convscope

        try:
            with Image.open(io.BytesIO(body)) as probe:  # reads the header only
                w, h = probe.size
                fmt = probe.format or ""
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                          f"not an image file Pillow can read ({type(exc).__name__})") from None
        if w * h > self.max_pixels:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                          f"image is {w}×{h} = {w * h:,} pixels; the limit is "
                          f"{self.max_pixels:,}")
        saved = self.target.saved
        with tempfile.TemporaryDirectory(prefix="convscope-serve-") as tmp:
            path = Path(tmp) / f"upload{_FORMATS.get(fmt, '.img')}"
            path.write_bytes(body)
            try:
                with self.lock:
                    (pred,) = saved.predict_files([path], top_k, "pad", "auto")
                    pixels, _ = saved.load_images([path], "pad", "auto")
                    x = saved.preprocess(pixels)
                    rec = image_record(saved.model, self.twin, x[0], pixels[0], "upload")
            except DataError as exc:
                msg = str(exc).replace(str(path), "the upload")
                raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, msg) from None
        return {"top": [{"label": lab, "probability": pr}
                        for lab, pr in zip(pred.labels, pred.probabilities)],
                "labels": pred.labels, "indices": pred.indices,
                "probabilities": pred.probabilities, "inverted": pred.inverted, "image": rec}



class _Handler(BaseHTTPRequestHandler):
    server: GuardedServer
    protocol_version = "HTTP/1.1"
    server_version = "convscope"
    timeout = 30  # seconds a client may stall (slowloris): the thread is freed after it

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode("utf-8"),
                   "application/json")

    def _refuse(self, status: int, message: str) -> None:
        self.close_connection = True
        self._json(status, {"error": message})

    def _guard(self) -> bool:
        if not self.server.host_ok(self.headers.get("Host")):
            self._refuse(HTTPStatus.FORBIDDEN, f"Host {self.headers.get('Host')!r} is not this "
                         f"server (DNS rebinding guard); open {self.server.url}")
            return False
        return True

    def _answer(self, fn: Callable[[], tuple[int, bytes, str]]) -> None:
        try:
            status, body, ctype = fn()
        except Refused as exc:
            self._refuse(exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request never stops the server
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR,
                         f"{type(exc).__name__}: {exc}".splitlines()[0])
        else:
            self._send(status, body, ctype)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._guard():
            return
        route = urlsplit(self.path).path

        def page() -> tuple[int, bytes, str]:
            ctype, body = self.server.get(route)
            return HTTPStatus.OK, body, ctype
        self._answer(page)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if not self._guard():
            return
        url = urlsplit(self.path)
        if url.path not in self.server.post_routes:
            routes = " or ".join(f"POST {r}" for r in self.server.post_routes) or "GET /"
            self._refuse(HTTPStatus.NOT_FOUND, f"no API {url.path!r}; {routes}")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length")
            return
        n = int(length)
        if n > self.server.max_bytes:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"upload is {n:,} bytes; the limit is {self.server.max_bytes:,}")
            return
        if n == 0:
            self._refuse(HTTPStatus.BAD_REQUEST, "empty upload: send an image file's bytes")
            return
        body = self.rfile.read(n)
        self._answer(lambda: (HTTPStatus.OK, json.dumps(
            self.server.post(url.path, url.query, body), allow_nan=False).encode("utf-8"),
            "application/json"))


def make_server(target: Target, host: str = "127.0.0.1", port: int = 8000,
                **kwargs: Any) -> ExplorerServer:
    """A bound :class:`ExplorerServer` (``port=0``: any free port; see ``server.url``)."""
    return ExplorerServer(target, host, port, **kwargs)

