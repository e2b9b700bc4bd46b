"""Benchmark ``galmoco fetch``: 16 concurrent workers vs a sequential client against a slow server.

A local Legacy-Survey-like server (``galmoco.fetch.standin``) adds 100 ms to every request, like a
distant service. Both clients fetch the same four-band 64x64 cubes through ``fetch_cutouts``; the
sequential one uses ``workers=1`` (one request at a time, as the official example notebook does).
Acceptance: the concurrent fetch is at least 8x faster.

Usage: ``python benchmarks/bench_fetch.py [--quick] [--n N] [--workers W] [--latency S]``
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from galmoco.fetch import fetch_cutouts
from galmoco.fetch.standin import LegacySurveyServer, running


def timed_fetch(manifest: Path, out: Path, url: str, workers: int) -> float:
    """Seconds to fetch every manifest row with ``workers`` concurrent requests."""
    start = time.perf_counter()
    result = fetch_cutouts(manifest, out, service="legacysurvey", url=url, size=64, bands="griz",
                           workers=workers)
    seconds = time.perf_counter() - start
    assert result.counts == {"fetched": sum(result.counts.values())}, result.counts
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 cutouts instead of 1,000")
    parser.add_argument("--n", type=int, default=None, help="number of cutouts")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added per request")
    args = parser.parse_args()
    n = args.n or (100 if args.quick else 1000)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp, running(LegacySurveyServer()) as server:
        server.latency = args.latency
        manifest = Path(tmp) / "manifest.csv"
        manifest.write_text("ra,dec\n" + "".join(f"{10 + i * 0.01:.4f},{-20 - (i % 50) * 0.01:.4f}\n"
                                                 for i in range(n)))
        sequential = timed_fetch(manifest, Path(tmp) / "seq", server.viewer, 1)
        concurrent = timed_fetch(manifest, Path(tmp) / "par", server.viewer, args.workers)
    ratio = sequential / concurrent
    command = "python benchmarks/bench_fetch.py " + " ".join(sys.argv[1:])
    print(f"""### fetch: concurrent vs sequential download

- machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores
- date: {datetime.date.today().isoformat()}
- command: `{command.strip()}`
- {n} four-band 64x64 cubes, local server adding {args.latency * 1000:.0f} ms per request

| client | seconds | cutouts/s |
|---|---|---|
| sequential (workers=1) | {sequential:.2f} | {n / sequential:.1f} |
| concurrent (workers={args.workers}) | {concurrent:.2f} | {n / concurrent:.1f} |

speed-up: **{ratio:.1f}x** (acceptance: >= 8x) {"PASS" if ratio >= 8 else "FAIL"}""")
    sys.exit(0 if ratio >= 8 else 1)


if __name__ == "__main__":
    main()
