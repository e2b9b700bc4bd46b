"""Local HTTP servers reproducing DESaccess and the Legacy Surveys viewer, quirks and faults included.

Both follow ``shared/reference/des-services.md``. They run on 127.0.0.1, port 0, in a thread, and
serve real FITS files. Fault injection: ``server.faults.add(substring, "drop", "500", ...)`` makes
the next requests whose path contains ``substring`` fail in that order. ``server.served`` counts
complete, fault-free replies per path (what the client really received).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
import time
import uuid
import warnings
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from astropy.io import fits

from galmoco.fetch.manifest import des_basename

# RA_CUTOUT/DEC_CUTOUT need HIERARCH cards, as in DES files (a process-wide filter: servers run in threads)
warnings.filterwarnings("ignore", message="Keyword name", category=fits.verify.VerifyWarning)

FAULTS = ("drop", "500", "slow", "truncate", "corrupt")
MTIME = "Tue, 22 Sep 2020 18:27:27 GMT"


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.faults = Faults()
        self.served: Counter = Counter()
        self.requests: Counter = Counter()  # (method, route) -> count
        self.latency = 0.0  # seconds added to every request
        self.slow_seconds = 2.0
        # after ``hold_after`` file replies, further file requests wait for ``hold`` and are then dropped
        self.hold_after: int | None = None
        self.hold = threading.Event()
        self.lock = threading.RLock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", count: bool = True) -> None:
        server: _Server = self.server
        fault = server.faults.take(self.path)
        if fault == "drop":
            self.close_connection = True
            return
        if fault == "500":
            status, body, ctype = 500, b"Internal Server Error", "text/plain"
        if fault == "slow":
            time.sleep(server.slow_seconds)
        if fault == "corrupt" and status == 200:
            body = b"SIMPLE  =" + bytes(np.random.default_rng(0).integers(0, 256, len(body) - 9, np.uint8))
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
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


def _blob(seed: str, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """A round galaxy-like blob plus noise, deterministic in ``seed``."""
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    h, w = shape[-2:]
    y, x = np.mgrid[:h, :w]
    blob = scale * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (2 * 4.0**2))
    return (blob + rng.normal(0, scale * 0.01, shape)).astype(np.float32)


def _fits_bytes(hdus: list) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- DESaccess


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(claims: dict, secret: bytes) -> str:
    """An HS256 JWT (RFC 7519), as DESaccess issues."""
    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing = f"{_b64(header)}.{_b64(json.dumps(claims).encode())}"
    return f"{signing}.{_b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"


@dataclass
class Job:
    jobid: str
    user: str
    submitted: float
    rows: list[dict]  # {"RA","DEC"} or {"COADD_OBJECT_ID"}
    bands: str
    size: int
    fail: bool
    files: dict[str, object] = field(default_factory=dict)  # relpath -> bytes or render spec


class DesAccessServer(_Server):
    """DESaccess API (under ``/desaccess/api``) and its file server (under ``/files-desaccess``).

    Tiles are 1 x 1 degree cells named like DES tiles (``DES0226-0430``, ``DES0130+0209``); a cutout
    near a cell edge is trimmed. Positions outside ``footprint`` (ra_min, ra_max, dec_min, dec_max)
    go to ``unmatched_positions``. Tokens are real HS256 JWTs lasting ``token_lifetime`` seconds.
    """

    def __init__(self, users: dict[str, str], max_per_job: int = 5000, max_jobs: int = 10,
                 job_seconds: float = 0.05, token_lifetime: float = 3600.0,
                 footprint: tuple[float, float, float, float] = (0.0, 360.0, -70.0, 10.0),
                 coadd_catalog: dict[int, tuple[float, float]] | None = None, port: int = 0) -> None:
        super().__init__(_DesHandler, port)
        self.users, self.max_per_job, self.max_jobs = users, max_per_job, max_jobs
        self.job_seconds, self.token_lifetime, self.footprint = job_seconds, token_lifetime, footprint
        self.coadd_catalog = coadd_catalog or {}
        self.secret = uuid.uuid4().bytes
        self.jobs: dict[str, Job] = {}
        self.rejections: list[str] = []  # limit errors the server had to send
        self.fail_next_jobs = 0
        self.logins = 0
        self.auth_error: str | None = None  # force this auth error on every authenticated call
        self.api = f"{self.url}/desaccess/api"
        self.files = f"{self.url}/files-desaccess"

    def job_status(self, job: Job) -> str:
        age = time.monotonic() - job.submitted
        if age < 0.3 * self.job_seconds:
            return "init"
        if age < self.job_seconds:
            return "started"
        return "failure" if job.fail else "success"

    def unfinished(self, user: str) -> int:
        return sum(j.user == user and self.job_status(j) in ("init", "started") for j in self.jobs.values())

    def tile_and_shape(self, ra: float, dec: float, size: int) -> tuple[str, tuple[int, int]]:
        """The 1-degree cell holding a position and the cutout shape once trimmed at its edges."""
        ra0, dec0 = np.floor(ra), np.floor(dec)
        centre_ra, centre_dec = ra0 + 0.5, dec0 + 0.5
        hours = centre_ra / 15
        name = (f"DES{int(hours):02d}{int((hours % 1) * 60):02d}{'-' if centre_dec < 0 else '+'}"
                f"{int(abs(centre_dec)):02d}{int((abs(centre_dec) % 1) * 60):02d}")
        scale = 3600 / 0.263
        x = (ra - ra0) * np.cos(np.radians(dec)) * scale
        xmax = np.cos(np.radians(dec)) * scale
        y, ymax = (dec - dec0) * scale, scale
        half = size / 2

        def side(pos: float, top: float) -> int:
            return int(min(size, max(1, round(min(pos + half, top) - max(pos - half, 0.0)))))

        return name, (side(y, ymax), side(x, xmax))

    def build_job(self, job: Job) -> dict:
        """Lay out the finished job's files and its summary.json."""
        cutouts, unmatched = [], {"coord": {"RA": [], "DEC": []}, "coadd": []}
        seen = set()
        for row in job.rows:
            if "COADD_OBJECT_ID" in row:
                coadd = int(row["COADD_OBJECT_ID"])
                if coadd not in self.coadd_catalog:
                    unmatched["coadd"].append(coadd)
                    continue
                ra, dec = self.coadd_catalog[coadd]
                posdir, kind = str(coadd), "coadd"
            else:
                ra, dec = float(row["RA"]), float(row["DEC"])
                ra_lo, ra_hi, dec_lo, dec_hi = self.footprint
                if not (ra_lo <= ra < ra_hi and dec_lo <= dec <= dec_hi):
                    unmatched["coord"]["RA"].append(ra)
                    unmatched["coord"]["DEC"].append(dec)
                    continue
                posdir, kind = des_basename(ra, dec), "coord"
            if (ra, dec) in seen:  # duplicate positions are dropped, as the real server does
                continue
            seen.add((ra, dec))
            tile, shape = self.tile_and_shape(ra, dec, job.size)
            names = []
            for band in job.bands:
                rel = f"{tile}/{posdir}/{des_basename(ra, dec)}_{band}.fits"
                job.files[rel] = (ra, dec, band, shape)
                names.append(f"{job.jobid}/{rel}")
            cutouts.append({"RA": ra, "DEC": dec, "COADD_OBJECT_ID": int(posdir) if kind == "coadd" else None,
                            "XSIZE": job.size * 0.263 / 60, "YSIZE": job.size * 0.263 / 60,
                            "COLORS_FITS": job.bands, "POSITION_TYPE": kind, "FILES": names,
                            "TILENAME": tile})
        summary = {"options": {}, "cutouts": cutouts, "unmatched_positions": unmatched,
                   "number_of_files": len(job.files), "size_on_disk": 0}
        job.files["summary.json"] = json.dumps(summary).encode()
        job.files[f"positions_{job.jobid}.csv"] = "\n".join(",".join(str(v) for v in r.values())
                                                            for r in job.rows).encode()
        job.files[f"cutout_{job.jobid}.log"] = b"log\n"
        return summary

    def file_bytes(self, job: Job, rel: str) -> bytes:
        spec = job.files[rel]
        if isinstance(spec, bytes):
            return spec
        ra, dec, band, shape = spec
        header = fits.Header({"EXTNAME": "SCI", "BAND": band, "MAGZERO": 30.0, "RA_CUTOUT": ra,
                              "DEC_CUTOUT": dec, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
                              "CRVAL1": ra, "CRVAL2": dec, "CRPIX1": shape[1] / 2 + 0.5,
                              "CRPIX2": shape[0] / 2 + 0.5, "CD1_1": -0.263 / 3600, "CD1_2": 0.0,
                              "CD2_1": 0.0, "CD2_2": 0.263 / 3600})
        data = _blob(f"{ra},{dec},{band}", shape, 100.0)
        body = _fits_bytes([fits.PrimaryHDU(data, header),
                            fits.ImageHDU(np.zeros(shape, np.int32), name="MSK"),
                            fits.ImageHDU(np.full(shape, 1e-4, np.float32), name="WGT")])
        job.files[rel] = body
        return body


class _DesHandler(_Handler):
    server: DesAccessServer

    def _fields(self) -> dict[str, str]:
        body = self._body()
        # JSON only when Content-Type is exactly application/json; otherwise form fields
        if self.headers.get("Content-Type") == "application/json":
            return {k: str(v) for k, v in json.loads(body or b"{}").items()}
        return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}

    def _auth(self) -> str | None:
        """The user of a valid token, or None after sending the auth error (HTTP 200 / 500)."""
        header = self.headers.get("Authorization", "")
        if self.server.auth_error:
            return self._json({"status": "error", "message": self.server.auth_error})
        if not header:
            return self._json({"status": "error", "message": "Missing authorization"})
        if not header.startswith("Bearer "):
            return self._json({"status": "error", "message": "Invalid header authorization"})
        parts = header[7:].split(".")
        if len(parts) != 3:
            return self._json({"status": "error", "message": "Invalid header string"}, 500)
        signing = f"{parts[0]}.{parts[1]}".encode()
        expected = _b64(hmac.new(self.server.secret, signing, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return self._json({"status": "error", "message": "Signature verification failed"})
        claims = json.loads(_unb64(parts[1]))
        if claims["exp"] < time.time():
            return self._json({"status": "error", "message": "Signature has expired"})
        return claims["username"]

    def _token(self, user: str) -> str:
        return make_jwt({"username": user, "name": user, "lastname": "", "email": "", "db": "desdr",
                         "roles": ["default"], "exp": time.time() + self.server.token_lifetime},
                        self.server.secret)

    def handle_route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        api, files = "/desaccess/api", "/files-desaccess/"
        if path == f"{api}/login" and method == "POST":
            return self._login(self._fields())
        if path == f"{api}/job/cutout" and method == "PUT":
            return self._cutout(self._fields())
        if path == f"{api}/job/status" and method == "POST":
            return self._status(self._fields())
        if path.startswith(files) and method == "GET":
            return self._file(path[len(files):])
        self._send(404, b"not found", "text/plain")

    def _login(self, f: dict) -> None:
        user = f.get("username") or f.get("email")
        if not user:
            return self._missing("username")
        if self.server.users.get(user) != f.get("password"):
            return self._json({"status": "error", "message": "Invalid credentials", "update": False}, 401)
        with self.server.lock:
            self.server.logins += 1
        self._json({"status": "ok", "message": "login", "username": user, "name": user, "lastname": "",
                    "email": "", "db": "desdr", "roles": ["default"], "token": self._token(user),
                    "preferences": {}})

    def _missing(self, name: str) -> None:
        self._json({"status": "error", "message": f"HTTP 400: Bad Request (Missing argument {name})"}, 400)

    def _error(self, message: str) -> None:
        with self.server.lock:
            self.server.rejections.append(message)
        self._json({"status": "error", "message": message})

    def _cutout(self, f: dict) -> None:
        user = self._auth()
        if user is None:
            return
        if "positions" not in f:
            return self._missing("positions")
        if f.get("release", "").upper() not in ("DR1", "DR2") or f.get("db") != "desdr":
            return self._error(f"Invalid release/db {f.get('release')}/{f.get('db')}")
        n = f["positions"].count("\n")  # the server counts newlines, not rows
        if n > self.server.max_per_job:
            return self._error(f"Number of requested cutouts ({n}) exceeds the maximum allowed per job "
                               f"request ({self.server.max_per_job}).")
        with self.server.lock:
            running = self.server.unfinished(user) + 1
            if running > self.server.max_jobs:
                self.server.rejections.append("concurrent")
                message = (f"Number of requested jobs ({running}) exceeds the maximum allowed concurrent "
                           f"jobs ({self.server.max_jobs}).")
                return self._json({"status": "error", "message": message})
            lines = f["positions"].strip().splitlines()
            header = [h.strip().upper() for h in lines[0].split(",")]
            rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
            size = round(float(f.get("xsize", 1.0)) * 60 / 0.263)
            fail = self.server.fail_next_jobs > 0
            self.server.fail_next_jobs -= int(fail)
            job = Job(uuid.uuid4().hex, user, time.monotonic(), rows, f.get("colors_fits", "i"), size, fail)
            self.server.build_job(job)
            self.server.jobs[job.jobid] = job
        self._json({"status": "ok", "message": f"Job:cutout id:{job.jobid} by:{user}", "jobid": job.jobid,
                    "new_token": self._token(user)})

    def _status(self, f: dict) -> None:
        user = self._auth()
        if user is None:
            return
        job = self.server.jobs.get(f.get("job-id", ""))
        if job is None or job.user != user:
            return self._json({"status": "error", "message": "job not found", "jobs": [],
                               "new_token": self._token(user)})
        status = self.server.job_status(job)
        done = status in ("success", "failure")
        record = {"job_type": "cutout", "job_name": f"cutout-{job.jobid}-{user}", "job_id": job.jobid,
                  "job_status": status, "job_status_message": "Cutout job crashed: tile DB unavailable" if
                  status == "failure" else "", "job_time_start": "", "job_time_complete": "",
                  "job_time_submitted": "", "cutout_files": [], "cutout_summary": {} if not done else
                  json.loads(job.files["summary.json"]), "cutout_positions": "", "expiration_date": ""}
        self._json({"status": "ok", "message": "", "new_token": self._token(user), "jobs": [record]})

    def _file(self, rest: str) -> None:
        parts = rest.split("/")  # <user>/cutout/<jobid>/<rel...>
        job = self.server.jobs.get(parts[2]) if len(parts) >= 3 and parts[1] == "cutout" else None
        if job is None or job.user != parts[0] or self.server.job_status(job) != "success":
            return self._send(404, b"<html>404 Not Found</html>", "text/html")
        rel = "/".join(parts[3:])
        if rel == "json" or rel.endswith("/json"):
            prefix = rel[:-4]
            entries = {}
            for name in job.files:
                if name.startswith(prefix):
                    head, _, tail = name[len(prefix):].partition("/")
                    entries[head] = {"name": head, "type": "directory", "mtime": MTIME} if tail else \
                        {"name": head, "type": "file", "mtime": MTIME, "size": 0}
            if not entries:
                return self._send(404, b"<html>404 Not Found</html>", "text/html")
            return self._send(200, json.dumps(list(entries.values())).encode(), count=False)
        if rel not in job.files:
            return self._send(404, b"<html>404 Not Found</html>", "text/html")
        if self.server.hold_after is not None and sum(self.server.served.values()) >= self.server.hold_after:
            self.server.hold.wait(30)
            self.close_connection = True
            return
        self._send(200, self.server.file_bytes(job, rel), "application/octet-stream")


# ---------------------------------------------------------------- Legacy Survey viewer


class LegacySurveyServer(_Server):
    """``/viewer/fits-cutout``: cubes in nanomaggies, zero outside ``footprint``, HTTP 500 with no overlap."""

    LAYERS = {"ls-dr10": "griz", "des-dr1": "grizY", "ls-dr9": "grz"}

    def __init__(self, footprint: tuple[float, float, float, float] = (0.0, 360.0, -70.0, 10.0),
                 port: int = 0) -> None:
        super().__init__(_LegacyHandler, port)
        self.footprint = footprint
        self.viewer = f"{self.url}/viewer"


class _LegacyHandler(_Handler):
    server: LegacySurveyServer

    def handle_route(self, method: str) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/viewer/fits-cutout" or method != "GET":
            return self._send(404, b"not found", "text/plain")
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if "ra" not in q or "dec" not in q:
            return self._send(400, b"Need ra,dec keywords", "text/plain")
        layer = q.get("layer", "ls-dr9")
        if layer not in self.server.LAYERS:
            return self._send(200, b"no such layer", "text/plain")  # the quirk: 200, not FITS
        try:
            size = int(q.get("size", "256"))  # "64.0" is an int() error: HTTP 500 like the real viewer
        except ValueError:
            return self._send(500, b"Internal Server Error", "text/plain")
        ra, dec, scale = float(q["ra"]), float(q["dec"]), float(q.get("pixscale", "0.262"))
        bands = q.get("bands", self.server.LAYERS[layer])
        if any(b not in self.server.LAYERS[layer] for b in bands):
            bands = self.server.LAYERS[layer]  # one bad letter: all the layer's bands, silently
        y, x = np.mgrid[:size, :size]
        pix_ra = ra - (x - size / 2) * scale / 3600 / np.cos(np.radians(dec))
        pix_dec = dec + (y - size / 2) * scale / 3600
        ra_lo, ra_hi, dec_lo, dec_hi = self.server.footprint
        covered = (pix_ra >= ra_lo) & (pix_ra < ra_hi) & (pix_dec >= dec_lo) & (pix_dec <= dec_hi)
        if not covered.any():
            return self._send(500, b"Internal Server Error", "text/plain")
        shape = (len(bands), size, size) if len(bands) > 1 else (size, size)
        cube = _blob(f"{ra},{dec}", shape, 10.0) * covered
        header = fits.Header({"SURVEY": "LegacySurvey", "VERSION": layer, "BANDS": bands.lower(),
                              **{f"BAND{i}": b for i, b in enumerate(bands)}, "CTYPE1": "RA---TAN",
                              "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec, "CRPIX1": size / 2 + 0.5,
                              "CRPIX2": size / 2 + 0.5, "CD1_1": -scale / 3600, "CD1_2": 0.0, "CD2_1": 0.0,
                              "CD2_2": scale / 3600})
        self._send(200, _fits_bytes([fits.PrimaryHDU(cube.astype(np.float32), header)]), "image/fits")


@contextmanager
def running(server: _Server):
    """Serve in a daemon thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.hold.set()
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    """Serve one of the stand-ins by hand (the README's walkthrough uses it), until Ctrl-C.

    ``python tests/fetch/servers.py desaccess --port 8765 --user demo:demo`` or
    ``python tests/fetch/servers.py legacysurvey --port 8766``.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("service", choices=("desaccess", "legacysurvey"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--user", default="demo:demo", help="NAME:PASSWORD accepted by the DESaccess login")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="how long a DESaccess job runs")
    args = parser.parse_args(argv)
    if args.service == "desaccess":
        name, _, password = args.user.partition(":")
        server: _Server = DesAccessServer({name: password}, job_seconds=args.job_seconds, port=args.port)
        print(f"--api-url {server.url}/desaccess/api --files-url {server.url}/files-desaccess", flush=True)
    else:
        server = LegacySurveyServer(port=args.port)
        print(f"--url {server.url}/viewer", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
