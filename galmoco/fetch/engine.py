"""The one download engine both services use: bounded concurrency, retries, integrity checks, atomic files.

HTTP goes through urllib3 (connection pools shared by the worker threads). Its ``Retry`` retries
dropped connections, timeouts, HTTP 429 and 5xx, honours ``Retry-After`` and follows redirects
(dropping ``Authorization`` when the host changes); between tries it waits an exponential backoff
with "full jitter" (Brooker 2015, "Exponential Backoff And Jitter", AWS Architecture Blog).
Proxies come from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` (either case), as for curl and pip:
HPC compute nodes often reach the internet only through one.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

import urllib3
from tqdm import tqdm
from urllib3.util.retry import Retry

from galmoco import __version__
from galmoco.errors import GalmocoError
from galmoco.fetch.verify import VerifyError
from galmoco.files import atomic_output, atomic_write_text

__all__ = [
    "RetryPolicy", "JitteredRetry", "Response", "TransientError", "FatalServiceError", "FetchInterrupted",
    "HttpClient", "Download", "Outcome", "run_downloads", "write_verified", "write_summary", "SUMMARY_NAME",
    "SUMMARY_COLUMNS", "RETRY_STATUSES",
]

log = logging.getLogger(__name__)

#: the per-object report written next to the data
SUMMARY_NAME = "fetch_summary.csv"
SUMMARY_COLUMNS = ("row", "id", "ra", "dec", "coadd_object_id", "status", "n_files", "reason")
#: replies worth another try: rate limited (429) and server trouble (5xx)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class JitteredRetry(Retry):
    """urllib3's ``Retry`` with "full jitter": the n-th consecutive retry waits a uniform random time
    in [0, min(backoff_max, backoff_factor * 2**n)] (n from 0), so many clients do not retry in step.
    ``Retry-After`` from the server takes precedence (urllib3 sleeps what it asks)."""

    def get_backoff_time(self) -> float:
        """Seconds before the next retry (0 before the first error)."""
        errors = len(list(takewhile(lambda h: h.redirect_location is None, reversed(self.history))))
        if errors == 0:
            return 0.0
        return random.uniform(0.0, min(self.backoff_max, self.backoff_factor * 2.0 ** (errors - 1)))


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

    def retry(self, attempts: int | None = None, resend: bool = True) -> JitteredRetry:
        """The urllib3 retry configuration for one request.

        Args:
            attempts: tries left for this request (default :attr:`attempts`).
            resend: retry after the request may have reached the server (read errors, 5xx). Off for
                requests that must not run twice (submitting a job); connection failures are
                always retried, as nothing was sent.

        Returns:
            A :class:`JitteredRetry` that returns the last reply instead of raising on a bad status.
        """
        left = max(0, (self.attempts if attempts is None else attempts) - 1)
        return JitteredRetry(total=left, connect=left, read=left if resend else 0, redirect=5,
                             status=left if resend else 0, other=0, allowed_methods=None,
                             status_forcelist=RETRY_STATUSES, backoff_factor=self.backoff,
                             backoff_max=self.max_backoff, raise_on_status=False, raise_on_redirect=False)


@dataclass(frozen=True)
class Response:
    """A complete HTTP reply: status, lowercase header names, the whole body, and the tries it took."""

    status: int
    headers: dict[str, str]
    body: bytes
    attempts: int = 1


class TransientError(Exception):
    """A network failure that outlasted the retries: timeout, refused/reset connection, truncated body."""


class FetchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_downloads`; ``outcomes`` holds the files that completed before it."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


class FatalServiceError(GalmocoError):
    """The service answered in a way that will fail for every request (e.g. an unknown layer)."""


class HttpClient:
    """Thread-safe HTTP(S) client over urllib3 pools, through the environment's proxy where one is set.

    Args:
        policy: retries, backoff and timeout of every request.
        maxsize: connections kept per host (at least the number of worker threads).
    """

    def __init__(self, policy: RetryPolicy | None = None, maxsize: int = 16) -> None:
        self.policy = policy or RetryPolicy()
        seconds = self.policy.timeout  # for connecting, and for each read (not for the whole body)
        self._options = {"maxsize": maxsize, "timeout": urllib3.Timeout(connect=seconds, read=seconds),
                         "headers": {"User-Agent": f"galmoco/{__version__}"}}
        self._direct = urllib3.PoolManager(**self._options)
        self._proxies = getproxies_environment()  # read once: {"https": url, "http": url, "no": hosts}
        self._via: dict[str, urllib3.ProxyManager] = {}
        self._lock = threading.Lock()

    def manager(self, url: str) -> urllib3.PoolManager:
        """The pool manager for ``url``: direct, or the proxy that ``HTTP(S)_PROXY``/``NO_PROXY`` choose."""
        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if not proxy or proxy_bypass_environment(parts.netloc, self._proxies):
            return self._direct
        with self._lock:
            if proxy not in self._via:
                self._via[proxy] = urllib3.ProxyManager(proxy, **self._options)
            return self._via[proxy]

    def request(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                attempts: int | None = None, resend: bool = True) -> Response:
        """Send one request (retried per the policy) and read the whole reply.

        Args:
            method: ``GET``, ``POST``, ``PUT``...
            url: absolute ``http://`` or ``https://`` URL, already quoted.
            body: request body.
            headers: extra headers.
            attempts: tries for this request (default: the policy's).
            resend: see :meth:`RetryPolicy.retry`.

        Returns:
            The last reply, whatever its status (a 429/5xx once the tries are used up).

        Raises:
            TransientError: the network failed on every try. The message never contains the body.
        """
        retries = self.policy.retry(attempts, resend)
        try:
            reply = self.manager(url).request(method, url, body=body, headers=headers, retries=retries,
                                              preload_content=True)
        except urllib3.exceptions.MaxRetryError as exc:
            tries = attempts or self.policy.attempts
            reason = f"{type(exc.reason).__name__}: {exc.reason}"
            raise TransientError(f"{reason} after {tries} attempts") from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        used = reply.retries.history if reply.retries is not None else ()
        tries = 1 + sum(h.redirect_location is None for h in used)
        return Response(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.data, tries)


def write_verified(path: Path, data: bytes, verify: Callable[[Path], object] | None = None) -> None:
    """Write ``data`` atomically (:func:`galmoco.files.atomic_output`), checked before it takes its name.

    Args:
        path: final file name.
        data: the bytes.
        verify: called on the temporary file; raising leaves neither it nor ``path`` behind.
    """
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
        if verify is not None:
            verify(tmp)


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


def _fetch_one(client: HttpClient, download: Download, resume: bool, stop: threading.Event) -> Outcome:
    """One file: urllib3 retries the transport and 429/5xx; a body that fails its check is fetched again,
    all within the policy's attempts."""
    if resume and _present(download):
        return Outcome(download, "skipped")
    policy, used, reason = client.policy, 0, ""
    while used < policy.attempts:
        if stop.is_set():
            return Outcome(download, "interrupted", "stopped before it completed", used)
        try:
            reply = client.request("GET", download.url, attempts=policy.attempts - used)
        except TransientError as exc:
            return Outcome(download, "failed", str(exc), policy.attempts)
        used += reply.attempts
        if reply.status in RETRY_STATUSES:
            status = download.on_server_error if reply.status >= 500 else "failed"
            return Outcome(download, status, f"HTTP {reply.status} after {used} attempts", used)
        if reply.status != 200:  # 4xx will not change on a retry
            text = reply.body[:200].decode("utf-8", "replace").strip()
            return Outcome(download, "failed", f"HTTP {reply.status}: {text}", used)
        if download.check_body is not None:
            download.check_body(reply.body)
        try:
            write_verified(download.dest, reply.body, download.verify)
            return Outcome(download, "fetched", "", used)
        except VerifyError as exc:
            reason = f"invalid file: {exc}"
        log.debug("%s: attempt %d: %s", download.url, used, reason)
        if used < policy.attempts:
            stop.wait(policy.delay(used - 1))
    return Outcome(download, "failed", f"{reason} after {used} attempts", used)


def run_downloads(downloads: Iterable[Download], workers: int = 8, resume: bool = False,
                  client: HttpClient | None = None, desc: str = "fetch") -> list[Outcome]:
    """Fetch files concurrently with a bounded thread pool.

    Args:
        downloads: the files.
        workers: concurrent requests (>= 1).
        resume: skip files already present that pass their check.
        client: HTTP client to share, with its retry policy (default: a new one, default policy).
        desc: progress-bar label.

    Returns:
        One :class:`Outcome` per download, in input order.

    Raises:
        FatalServiceError: a reply said every request will fail; the run stops early.
        FetchInterrupted: on Ctrl-C, after in-flight requests have ended and their temporary files
            are gone; it carries the outcomes completed so far.
    """
    client = client or HttpClient(maxsize=workers)
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
                pending[pool.submit(_fetch_one, client, nxt[1], resume, stop)] = nxt[0]
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
    return atomic_write_text(Path(out) / SUMMARY_NAME, buffer.getvalue())
