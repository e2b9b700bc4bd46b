"""The download engine against the local viewer: retries on every fault kind (429 with Retry-After
included), redirects, proxies from the environment, atomic writes, backoff."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from galmoco.fetch.engine import HttpClient, RetryPolicy, run_downloads, write_verified
from galmoco.fetch.legacysurvey import cube_downloads
from galmoco.fetch.manifest import read_manifest
from galmoco.fetch.verify import VerifyError, verify_legacy_cube

from .conftest import POSITIONS, write_manifest

FAST = RetryPolicy(attempts=4, backoff=0.01, timeout=0.5)


def _downloads(tmp_path, server, n=3):
    table = read_manifest(write_manifest(tmp_path / "m.csv", POSITIONS[:n]))
    return cube_downloads(table, tmp_path / "out", server.viewer, "ls-dr10", "griz", 32, 0.262)


@pytest.mark.parametrize("fault", ["drop", "500", "slow", "truncate", "corrupt"])
def test_each_fault_is_retried_and_the_file_kept_valid(tmp_path, legacy_server, fault):
    legacy_server.slow_seconds = 1.0
    legacy_server.faults.add("fits-cutout", fault, fault)
    outcomes = run_downloads(_downloads(tmp_path, legacy_server), workers=2, client=HttpClient(FAST))
    assert [o.status for o in outcomes] == ["fetched"] * 3
    assert sum(o.attempts for o in outcomes) == 3 + 2  # two faulty replies, each cost one attempt
    for o in outcomes:
        verify_legacy_cube(o.download.dest, "griz", 32)
    assert not list((tmp_path / "out").glob(".*"))


def test_gives_up_after_bounded_attempts(tmp_path, legacy_server):
    legacy_server.faults.add("fits-cutout", *["500"] * 10)
    outcomes = run_downloads(_downloads(tmp_path, legacy_server, 1), workers=1, client=HttpClient(FAST))
    assert outcomes[0].status == "out_of_footprint" and "HTTP 500 after 4 attempts" in outcomes[0].reason
    assert sum(legacy_server.requests.values()) == 4
    assert not outcomes[0].download.dest.exists()


def test_resume_skips_verified_files_and_refetches_broken_ones(tmp_path, legacy_server):
    downloads = _downloads(tmp_path, legacy_server)
    run_downloads(downloads, workers=2, client=HttpClient(FAST))
    downloads[0].dest.write_bytes(b"SIMPLE  = garbage")
    outcomes = run_downloads(downloads, workers=2, client=HttpClient(FAST), resume=True)
    assert [o.status for o in outcomes] == ["fetched", "skipped", "skipped"]
    assert sum(legacy_server.requests.values()) == 4


def test_atomic_write_drops_a_file_that_fails_its_check(tmp_path):
    def reject(path):
        raise VerifyError("bad")

    with pytest.raises(VerifyError):
        write_verified(tmp_path / "x.fits", b"data", reject)
    assert list(tmp_path.iterdir()) == []
    write_verified(tmp_path / "y.bin", b"data")
    assert (tmp_path / "y.bin").read_bytes() == b"data" and len(list(tmp_path.iterdir())) == 1


def test_backoff_is_jittered_and_capped():
    policy = RetryPolicy(backoff=1.0, max_backoff=5.0)
    delays = [policy.delay(10) for _ in range(200)]
    assert max(delays) <= 5.0 and min(delays) >= 0.0 and len(set(delays)) > 190
    assert all(policy.delay(0) <= 1.0 for _ in range(100))


def test_client_reports_refused_connection_as_transient():
    from galmoco.fetch.engine import TransientError

    with pytest.raises(TransientError):
        HttpClient(RetryPolicy(attempts=2, backoff=0.01, timeout=0.5)).request("GET", "http://127.0.0.1:9/x")


def test_429_is_retried_after_the_servers_retry_after(tmp_path, legacy_server):
    legacy_server.faults.add("fits-cutout", "429")
    start = time.monotonic()
    outcomes = run_downloads(_downloads(tmp_path, legacy_server, 1), workers=1, client=HttpClient(FAST))
    waited = time.monotonic() - start
    assert outcomes[0].status == "fetched" and outcomes[0].attempts == 2
    assert waited >= legacy_server.retry_after  # the backoff alone would wait <= 0.01 s


def test_redirects_are_followed(tmp_path, legacy_server):
    legacy_server.faults.add("fits-cutout", "302", "302")
    outcomes = run_downloads(_downloads(tmp_path, legacy_server, 2), workers=1, client=HttpClient(FAST))
    assert [o.status for o in outcomes] == ["fetched", "fetched"]
    assert sum(legacy_server.requests.values()) == 4  # two redirected requests and two served ones
    verify_legacy_cube(outcomes[0].download.dest, "griz", 32)


class _ForwardingProxy(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: relays ``GET http://host/path`` to the host; counts what it relays."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.relayed.append(self.path)
        parts = urlsplit(self.path)
        conn = http.client.HTTPConnection(parts.netloc, timeout=10)
        conn.request("GET", f"{parts.path}?{parts.query}")
        reply = conn.getresponse()
        body = reply.read()
        self.send_response(reply.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingProxy)
    server.relayed = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_environments_proxy_is_used_unless_no_proxy_says_otherwise(tmp_path, legacy_server, proxy,
                                                                       monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    outcomes = run_downloads(_downloads(tmp_path, legacy_server, 3), workers=2, client=HttpClient(FAST))
    assert [o.status for o in outcomes] == ["fetched"] * 3
    assert len(proxy.relayed) == 3 and all(p.startswith(legacy_server.viewer) for p in proxy.relayed)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    again = run_downloads(_downloads(tmp_path, legacy_server, 3), client=HttpClient(FAST))
    assert [o.status for o in again] == ["fetched"] * 3
    assert len(proxy.relayed) == 3 and sum(legacy_server.requests.values()) == 6
