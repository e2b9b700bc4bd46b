"""``galmoco fetch``: a thin wrapper over :func:`galmoco.fetch.fetch_cutouts`.

Credentials are never options: DESaccess reads ``DESACCESS_USER``/``DESACCESS_PASSWORD`` or ``~/.netrc``.
"""

from __future__ import annotations

import inspect

import click

from galmoco.errors import GalmocoError
from galmoco.fetch import SERVICES, fetch_cutouts

__all__ = ["fetch"]

_DEFAULTS = {name: p.default for name, p in inspect.signature(fetch_cutouts).parameters.items()}


def _opt(*decls: str, name: str, help: str, **kwargs) -> click.decorators.FC:
    """An option whose default is the library's (``show_default`` so --help tells it)."""
    return click.option(*decls, name, default=_DEFAULTS[name], show_default=True, help=help, **kwargs)


@click.command("fetch")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@_opt("--service", name="service", type=click.Choice(SERVICES), help="Where the cutouts come from.")
@_opt("--release", name="release", help="DESaccess data release (dr1/dr2 on the public server).")
@_opt("--bands", name="bands", help="Bands, e.g. griz.")
@_opt("--size", name="size", type=int, help="Cutout side in pixels.")
@_opt("--arcmin", name="arcmin", type=float, help="Cutout side in arcmin (instead of --size).")
@_opt("--workers", name="workers", type=int, help="Concurrent downloads.")
@_opt("--resume", name="resume", is_flag=True, help="Continue a fetch in OUT; skip what is complete.")
@_opt("--api-url", name="api_url", envvar="GALMOCO_DESACCESS_API", show_envvar=True,
      help="DESaccess API [default: the public server].")
@_opt("--files-url", name="files_url", envvar="GALMOCO_DESACCESS_FILES", show_envvar=True,
      help="DESaccess file server [default: the public server].")
@_opt("--url", name="url", envvar="GALMOCO_LEGACYSURVEY_URL", show_envvar=True,
      help="Legacy Survey viewer [default: legacysurvey.org/viewer].")
@_opt("--layer", name="layer", help="Legacy Survey layer (ls-dr10, des-dr1, ...).")
@_opt("--pixscale", name="pixscale", type=float, help="Legacy Survey pixel scale, arcsec/pixel.")
@_opt("--database", name="database", help="DESaccess database (desdr public, dessci collaboration).")
@_opt("--poll-interval", name="poll_interval", type=float, help="First wait between job polls, s.")
@_opt("--max-per-job", name="max_per_job", type=int,
      help="DESaccess rows per job (lowered to the server's own limit).")
@_opt("--max-jobs", name="max_jobs", type=int,
      help="DESaccess unfinished jobs at once (lowered to the server's own limit).")
@_opt("--retries", name="retries", type=int, help="Attempts per request.")
@_opt("--timeout", name="timeout", type=float, help="Socket timeout per request, s.")
@_opt("--backoff", name="backoff", type=float, help="First retry wait bound, s (doubles, jittered).")
@_opt("--allow-insecure", name="allow_insecure", is_flag=True, envvar="GALMOCO_ALLOW_INSECURE",
      show_envvar=True, help="Send DESaccess credentials over plain http:// (a local test server only).")
def fetch(manifest: str, out: str, size: int, arcmin: float | None, **options) -> None:
    """Download cutouts for every position (ra,dec[,id]) or COADD_OBJECT_ID in MANIFEST.

    DESaccess needs DESACCESS_USER and DESACCESS_PASSWORD (or ~/.netrc); files are written in the
    job's own layout, ready for `galmoco pack OUT`. A summary table fetch_summary.csv goes to OUT.
    Proxies are taken from HTTPS_PROXY, HTTP_PROXY and NO_PROXY.
    Exit status 1 when some objects failed (see the summary).
    """
    source = click.get_current_context().get_parameter_source("size")
    if arcmin is not None and source == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --size or --arcmin, not both")
    result = fetch_cutouts(manifest, out, size=size, arcmin=arcmin, **options)
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
               + f"; summary: {result.summary}")
    if result.n_failed:
        raise GalmocoError(f"{result.n_failed} object(s) failed; reasons in {result.summary}")
