"""A local DESaccess: the API (``/desaccess/api``) and its file server (``/files-desaccess``).

Follows ``shared/reference/des-services.md``: form bodies, HS256 tokens that expire, auth errors as
HTTP 200 replies, job states, both limits enforced with the real messages, ``unmatched_positions``,
cutouts trimmed at tile edges, ``+`` in tile names, nginx JSON listings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from astropy.io import fits

from galmoco.fetch.manifest import des_basename
from galmoco.fetch.standin.base import StandinHandler, StandinServer, blob_image, fits_bytes

__all__ = ["DesAccessServer", "Job", "make_jwt", "MTIME"]

# RA_CUTOUT/DEC_CUTOUT need HIERARCH cards, as in DES files (a process-wide filter: servers run in threads)
warnings.filterwarnings("ignore", message="Keyword name", category=fits.verify.VerifyWarning)

MTIME = "Tue, 22 Sep 2020 18:27:27 GMT"


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


class DesAccessServer(StandinServer):
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

    def listing(self, job: Job, prefix: str) -> list[dict]:
        """The nginx JSON listing of the job folder ``prefix`` (``""`` or ending in ``/``)."""
        entries = {}
        for name in job.files:
            if name.startswith(prefix):
                head, _, tail = name[len(prefix):].partition("/")
                entries[head] = {"name": head, "type": "directory", "mtime": MTIME} if tail else \
                    {"name": head, "type": "file", "mtime": MTIME, "size": 0}
        return list(entries.values())

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
        data = blob_image(f"{ra},{dec},{band}", shape, 100.0)
        body = fits_bytes([fits.PrimaryHDU(data, header),
                            fits.ImageHDU(np.zeros(shape, np.int32), name="MSK"),
                            fits.ImageHDU(np.full(shape, 1e-4, np.float32), name="WGT")])
        job.files[rel] = body
        return body


class _DesHandler(StandinHandler):
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
            entries = self.server.listing(job, rel[:-4])
            if not entries:
                return self._send(404, b"<html>404 Not Found</html>", "text/html")
            return self._send(200, json.dumps(entries).encode(), count=False)
        if rel not in job.files:
            return self._send(404, b"<html>404 Not Found</html>", "text/html")
        if self.server.hold_after is not None and sum(self.server.served.values()) >= self.server.hold_after:
            self.server.hold.wait(30)
            self.close_connection = True
            return
        self._send(200, self.server.file_bytes(job, rel), "application/octet-stream")
