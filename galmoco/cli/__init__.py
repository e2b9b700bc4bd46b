"""The ``galmoco`` command line: a click group whose commands are thin wrappers over library calls.

Each command lives in its own module of this package and is imported only when it runs, so
``galmoco --help`` stays fast (torch is not imported for it).
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

import click

from galmoco import __version__
from galmoco.errors import GalmocoError

__all__ = ["main"]

#: command name -> "module:attribute" of its click command
COMMANDS = {
    "simulate": "galmoco.cli.simulate:simulate",
    "fetch": "galmoco.cli.fetch:fetch",
    "pack": "galmoco.cli.pack:pack",
    "train": "galmoco.cli.train:train",
    "embed": "galmoco.cli.embed:embed",
    "placement": "galmoco.cli.analysis:placement",
    "probe": "galmoco.cli.analysis:probe",
    "report": "galmoco.cli.analysis:report",
    "demo": "galmoco.cli.demo:demo",
    "index": "galmoco.cli.search:index",
    "search": "galmoco.cli.search:search",
    "explore": "galmoco.cli.explore:explore",
}

#: one-line help shown by ``galmoco --help`` without importing the command modules
SUMMARIES = {
    "simulate": "Simulate a DES-like survey (GalSim) in the DESaccess job layout.",
    "fetch": "Download cutouts for a manifest from DESaccess or the Legacy Survey viewer.",
    "pack": "Pack FITS cutouts into one HDF5 dataset file.",
    "train": "Train the MoCo-regularised autoencoder (or a baseline) on a packed dataset.",
    "embed": "Write the latent vectors of a packed dataset to a catalogue.",
    "placement": "Rank each flipped/rotated copy of a galaxy among all originals.",
    "probe": "Linear and kNN probes from latent vectors to catalogue columns.",
    "report": "One self-contained HTML report comparing training runs.",
    "demo": "The main job end to end on a simulated survey.",
    "index": "Build a similarity-search index of embeddings (and every galaxy's neighbours).",
    "search": "The most similar galaxies to an id, a sky position or a FITS cutout.",
    "explore": "One self-contained HTML page to explore the latent space interactively.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUMMARIES[name]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="galmoco")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, and full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """galmoco: galaxy representations that survive flips, rotations and observing conditions.

    Pipeline: simulate or fetch -> pack -> train -> embed -> placement / probe / report.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader reports CPU features at INFO


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, turning library errors into one line and an exit status.

    Exit status 0 on success, 1 for failures, 2 for usage errors (click's own), 130 on Ctrl-C.
    """
    verbose = any(a in ("-v", "--verbose") for a in (sys.argv[1:] if argv is None else argv))
    try:
        cli.main(args=argv, prog_name="galmoco", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors and bad option values: exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except GalmocoError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # an unexpected failure: still one line unless --verbose
        if verbose:
            traceback.print_exc()
        click.echo(f"Error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)", err=True)
        sys.exit(1)
