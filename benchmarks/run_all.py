"""Run every benchmark once (``make bench``) and print their Markdown snippets.

Each script compares galmoco against a baseline in the same run and prints its own snippet with the
machine, date and command; paste them into ``benchmarks/RESULTS.md``. ``--quick`` runs the small sizes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = ("bench_io", "bench_sim", "bench_fetch", "bench_train", "bench_augment", "bench_embed",
              "bench_placement", "bench_search", "bench_embed_torchrun")


def main() -> int:
    quick = ["--quick"] if "--quick" in sys.argv[1:] else []
    here = Path(__file__).parent
    failed = []
    for name in BENCHMARKS:
        print(f"\n<!-- {name} -->", flush=True)
        if subprocess.run([sys.executable, str(here / f"{name}.py"), *quick]).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
