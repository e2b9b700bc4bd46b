"""Local stand-ins of DESaccess and the Legacy Surveys viewer, quirks and faults included.

They follow ``shared/reference/des-services.md`` and serve real FITS files (synthetic blobs in the
real layout) on 127.0.0.1, so the tests, the benchmark and the README walkthrough run without a DES
account or internet. Run one by hand::

    python -m galmoco.fetch.standin desaccess --port 8765 --user demo:demo
    python -m galmoco.fetch.standin legacysurvey --port 8766

In Python, serve one in a thread for the duration of a block::

    with running(DesAccessServer({"demo": "demo"})) as server:
        fetch_cutouts(manifest, out, api_url=server.api, files_url=server.files, allow_insecure=True)

They speak plain ``http://`` on the loopback interface only: a test fixture, not a service.
"""

from __future__ import annotations

import argparse

from galmoco.fetch.standin.base import FAULTS, Faults, StandinServer, running
from galmoco.fetch.standin.desaccess import DesAccessServer, make_jwt
from galmoco.fetch.standin.legacysurvey import LegacySurveyServer

__all__ = ["DesAccessServer", "LegacySurveyServer", "StandinServer", "Faults", "FAULTS", "running",
           "make_jwt", "main"]


def main(argv: list[str] | None = None) -> None:
    """Serve a stand-in on 127.0.0.1 until Ctrl-C; print the options that point ``galmoco fetch`` at it.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="python -m galmoco.fetch.standin",
                                     description="A local stand-in of a DES cutout service (127.0.0.1).")
    parser.add_argument("service", choices=("desaccess", "legacysurvey"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--user", default="demo:demo", help="NAME:PASSWORD accepted by the DESaccess login")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="how long a DESaccess job runs")
    args = parser.parse_args(argv)
    if args.service == "desaccess":
        name, _, password = args.user.partition(":")
        server: StandinServer = DesAccessServer({name: password}, job_seconds=args.job_seconds,
                                                port=args.port)
        print(f"--api-url {server.api} --files-url {server.files} --allow-insecure", flush=True)
    else:
        server = LegacySurveyServer(port=args.port)
        print(f"--url {server.viewer}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
