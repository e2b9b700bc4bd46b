"""The HTTP machinery of the stand-ins: a threaded 127.0.0.1 server, fault injection, FITS helpers.

Fault injection: ``server.faults.add(substring, "drop", "500", ...)`` makes the next requests whose
path contains ``substring`` fail in that order. ``server.served`` counts complete, fault-free
replies per path (what the client really received); ``server.requests`` counts requests per route.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np
from astropy.io import fits

__all__ = ["Faults", "StandinServer", "StandinHandler", "blob_image", "fits_bytes", "running", "FAULTS"]

#: ``429``: "Too Many Requests" with ``Retry-After: server.retry_after``; ``302``: a redirect to the same
#: URL (served normally next time, as the fault is used up)
FAULTS = ("drop", "500", "slow", "truncate", "corrupt", "429", "302")


class Faults:
    """Per-path queues of faults, consumed one per matching request."""

    def __init__(self) -> None:
        self._rules: list[tuple[str, deque]] = []
        self._lock = threading.Lock()

    def add(self, substring: str, *kinds: str) -> None:
        assert all(k in FAULTS for k in kinds), kinds
        with self._lock:
            self._rules.append((substring, deque(kinds)))

    def take(self, path: str) -> str | None:
        with self._lock:
            for substring, kinds in self._rules:
                if substring in path and kinds:
                    return kinds.popleft()
        return None


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.faults = Faults()
        self.served: Counter = Counter()
        self.requests: Counter = Counter()  # (method, route) -> count
        self.latency = 0.0  # seconds added to every request
        self.slow_seconds = 2.0
        self.retry_after = 1  # seconds a "429" fault asks the client to wait
        # after ``hold_after`` file replies, further file requests wait for ``hold`` and are then dropped
        self.hold_after: int | None = None
        self.hold = threading.Event()
        self.lock = threading.RLock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services

    def log_message(self, *args) -> None:  # quiet
        pass

    def _faulted(self, fault: str | None, status: int, body: bytes,
                 ctype: str) -> tuple[int, bytes, str, dict[str, str]]:
        """The reply a fault turns ``(status, body, ctype)`` into, with any extra headers."""
        server: StandinServer = self.server
        if fault == "500":
            return 500, b"Internal Server Error", "text/plain", {}
        if fault == "429":
            return 429, b"Too Many Requests", "text/plain", {"Retry-After": str(server.retry_after)}
        if fault == "302":
            return 302, b"", "text/plain", {"Location": self.path}
        if fault == "slow":
            time.sleep(server.slow_seconds)
        if fault == "corrupt" and status == 200:
            body = b"SIMPLE  =" + bytes(np.random.default_rng(0).integers(0, 256, len(body) - 9, np.uint8))
        return status, body, ctype, {}

    def _send(self, status: int, body: bytes, ctype: str = "application/json", count: bool = True) -> None:
        server: StandinServer = self.server
        fault = server.faults.take(self.path)
        if fault == "drop":
            self.close_connection = True
            return
        status, body, ctype, extra = self._faulted(fault, status, body, ctype)
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if fault == "truncate":
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return
        if count and fault is None and status == 200:
            with server.lock:
                server.served[unquote(urlsplit(self.path).path)] += 1

    def _json(self, payload: dict, status: int = 200) -> None:
        self._send(status, json.dumps(payload).encode())

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self, method: str) -> None:
        time.sleep(self.server.latency)
        with self.server.lock:
            self.server.requests[(method, urlsplit(self.path).path)] += 1
        self.handle_route(method)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")


def blob_image(seed: str, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """A round galaxy-like blob plus noise, deterministic in ``seed``."""
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    h, w = shape[-2:]
    y, x = np.mgrid[:h, :w]
    blob = scale * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (2 * 4.0**2))
    return (blob + rng.normal(0, scale * 0.01, shape)).astype(np.float32)


def fits_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


@contextmanager
def running(server: StandinServer):
    """Serve in a daemon thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.hold.set()
        server.shutdown()
        server.server_close()

