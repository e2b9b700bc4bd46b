"""The one download engine both services use: bounded concurrency, retries, integrity checks, atomic files.

HTTP goes through the standard library's ``http.client`` with one kept-alive connection per worker
thread and host: it needs no extra dependency, and retries/timeouts are implemented here anyway
(exponential backoff with "full jitter", Brooker 2015, "Exponential Backoff And Jitter", AWS
Architecture Blog), so a higher-level client would add nothing but a package.
"""

from __future__ import annotations

import csv
import http.client
import io
import logging
import os
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from galmoco import __version__
from galmoco.errors import GalmocoError
from galmoco.fetch.verify import VerifyError

__all__ = [
    "RetryPolicy", "Response", "TransientError", "FatalServiceError", "FetchInterrupted", "HttpClient",
    "Download",
    "Outcome", "run_downloads", "atomic_write_bytes", "write_summary", "SUMMARY_NAME", "SUMMARY_COLUMNS",
]

log = logging.getLogger(__name__)

#: the per-object report written next to the data
SUMMARY_NAME = "fetch_summary.csv"
SUMMARY_COLUMNS = ("row", "id", "ra", "dec", "coadd_object_id", "status", "n_files", "reason")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request.

    Attributes:
        attempts: tries per request in total (>= 1).
        backoff: seconds; the n-th retry waits a uniform random time in [0, min(max_backoff, backoff*2**n)].
        max_backoff: cap on one wait, seconds.
        timeout: socket timeout for connecting and for each read, seconds.
    """

    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 30.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): full jitter over the exponential cap."""
        return random.uniform(0.0, min(self.max_backoff, self.backoff * 2.0**retry))


@dataclass(frozen=True)
class Response:
    """A complete HTTP reply: status, lowercase header names, the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes


class TransientError(Exception):
    """A network failure worth retrying: timeout, reset, dropped connection, truncated body."""


class FetchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_downloads`; ``outcomes`` holds the files that completed before it."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


class FatalServiceError(GalmocoError):
    """The service answered in a way that will fail for every request (e.g. an unknown layer)."""


class HttpClient:
    """Thread-safe HTTP(S) client: each thread keeps one persistent connection per host.

    Args:
        timeout: socket timeout in seconds (connect and each read).
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._local = threading.local()

    def _connections(self) -> dict[tuple[str, str], http.client.HTTPConnection]:
        if not hasattr(self._local, "conns"):
            self._local.conns = {}
        return self._local.conns

    def _drop(self, key: tuple[str, str]) -> None:
        conn = self._connections().pop(key, None)
        if conn is not None:
            conn.close()

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        """Send one request and read the whole reply.

        Args:
            method: ``GET``, ``POST``, ``PUT``...
            url: absolute ``http://`` or ``https://`` URL, already quoted.
            body: request body.
            headers: extra headers.

        Returns:
            The reply, whatever its status.

        Raises:
            TransientError: timeout, refused/reset/dropped connection, or a body shorter than its
                Content-Length. The message never contains the request body.
        """
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": f"galmoco/{__version__}", **(headers or {})}
        for fresh in (False, True):
            conns = self._connections()
            reused = key in conns and not fresh
            if not reused:
                self._drop(key)
                cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                conns[key] = cls(parts.netloc, timeout=self.timeout)
            conn = conns[key]
            try:
                conn.request(method, target, body=body, headers=sent)
                reply = conn.getresponse()
                data = reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop(key)
                if reused:  # the server closed an idle kept-alive connection: not a failure, resend once
                    continue
                raise TransientError(f"{type(exc).__name__}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(key)
                raise TransientError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
            if reply.will_close:
                self._drop(key)
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)
        raise AssertionError("unreachable")  # pragma: no cover


def atomic_write_bytes(path: Path, data: bytes, check: Callable[[Path], object] | None = None) -> None:
    """Write ``data`` to a temporary name in the same folder, check it, then rename it into place.

    A killed process leaves at most a ``.part`` file, never a partial ``path``. No fsync: the
    guarantee is against process death, and fsync per cutout would dominate the run time.

    Args:
        path: final file name.
        data: the bytes.
        check: called on the temporary file; raising drops the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        tmp.write_bytes(data)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Download:
    """One file to fetch.

    Attributes:
        url: where to get it.
        dest: where it goes.
        verify: raises :class:`VerifyError` when a file at the given path is not acceptable.
        key: the object it belongs to (groups files into summary rows).
        on_server_error: outcome status when every attempt got a 5xx (the Legacy Survey viewer
            answers 500 for positions with no overlap, so it uses ``"out_of_footprint"``).
        check_body: inspects a 200 reply before it is written; raises :class:`FatalServiceError`
            when the reply means every request will fail.
    """

    url: str
    dest: Path
    verify: Callable[[Path], object]
    key: str = ""
    on_server_error: str = "failed"
    check_body: Callable[[bytes], None] | None = None


@dataclass
class Outcome:
    """What happened to one :class:`Download`: status ``fetched``, ``skipped`` (present and valid),
    ``failed``, ``out_of_footprint`` or ``interrupted``, with a reason for the last three."""

    download: Download
    status: str
    reason: str = ""
    attempts: int = 0


def _present(download: Download) -> bool:
    if not download.dest.is_file():
        return False
    try:
        download.verify(download.dest)
    except VerifyError as exc:
        log.info("%s is present but invalid (%s): fetching it again", download.dest, exc)
        return False
    return True


def _fetch_one(client: HttpClient, download: Download, policy: RetryPolicy, resume: bool,
               stop: threading.Event) -> Outcome:
    if resume and _present(download):
        return Outcome(download, "skipped")
    reason, server_error = "", False
    for attempt in range(1, policy.attempts + 1):
        if stop.is_set():
            return Outcome(download, "interrupted", "stopped before it completed", attempt - 1)
        server_error = False
        try:
            reply = client.request("GET", download.url)
        except TransientError as exc:
            reason = str(exc)
        else:
            if reply.status == 200:
                if download.check_body is not None:
                    download.check_body(reply.body)
                try:
                    atomic_write_bytes(download.dest, reply.body, download.verify)
                    return Outcome(download, "fetched", "", attempt)
                except VerifyError as exc:
                    reason = f"invalid file: {exc}"
            elif reply.status >= 500:
                reason, server_error = f"HTTP {reply.status}", True
            else:  # 4xx will not change on a retry
                text = reply.body[:200].decode("utf-8", "replace").strip()
                return Outcome(download, "failed", f"HTTP {reply.status}: {text}", attempt)
        log.debug("%s: attempt %d failed: %s", download.url, attempt, reason)
        if attempt < policy.attempts:
            stop.wait(policy.delay(attempt - 1))
    status = download.on_server_error if server_error else "failed"
    return Outcome(download, status, f"{reason} after {policy.attempts} attempts", policy.attempts)


def run_downloads(downloads: Iterable[Download], workers: int = 8, policy: RetryPolicy | None = None,
                  resume: bool = False, client: HttpClient | None = None,
                  desc: str = "fetch") -> list[Outcome]:
    """Fetch files concurrently with a bounded thread pool.

    Args:
        downloads: the files.
        workers: concurrent requests (>= 1).
        policy: retry policy (default :class:`RetryPolicy`).
        resume: skip files already present that pass their check.
        client: HTTP client to share (default: a new one with the policy's timeout).
        desc: progress-bar label.

    Returns:
        One :class:`Outcome` per download, in input order.

    Raises:
        FatalServiceError: a reply said every request will fail; the run stops early.
        FetchInterrupted: on Ctrl-C, after in-flight requests have ended and their temporary files
            are gone; it carries the outcomes completed so far.
    """
    policy = policy or RetryPolicy()
    client = client or HttpClient(policy.timeout)
    items = list(downloads)
    results: list[Outcome | None] = [None] * len(items)
    stop = threading.Event()
    pending: dict[Future, int] = {}
    queue = iter(enumerate(items))
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="galmoco-fetch")
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=None)
    try:
        while True:
            # keep a small window in flight so Ctrl-C does not wait for a huge queue to drain
            while len(pending) < 2 * max(1, workers):
                nxt = next(queue, None)
                if nxt is None:
                    break
                pending[pool.submit(_fetch_one, client, nxt[1], policy, resume, stop)] = nxt[0]
            if not pending:
                break
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                results[index] = future.result()  # re-raises FatalServiceError
                bar.update(1)
    except KeyboardInterrupt:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for future, index in pending.items():  # requests in flight finished (and were kept) meanwhile
            if not future.cancelled() and future.exception() is None:
                results[index] = future.result()
        raise FetchInterrupted([r for r in results if r is not None]) from None
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
        pool.shutdown(wait=True)
    return [r for r in results if r is not None]


def write_summary(rows: list[dict], out: Path) -> Path:
    """Write the per-object report ``fetch_summary.csv`` (columns :data:`SUMMARY_COLUMNS`) atomically.

    Args:
        rows: one dict per manifest row; missing columns are written empty.
        out: the output folder.

    Returns:
        The summary's path.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["row"]):
        writer.writerow(row)
    path = Path(out) / SUMMARY_NAME
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path

