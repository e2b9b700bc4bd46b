"""A PNG contact sheet of simulated cutouts in Lupton et al. (2004, PASP 116, 133) asinh RGB."""

from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np

from galmoco.files import atomic_output

__all__ = ["contact_sheet", "write_preview"]


def contact_sheet(stamps: list[np.ndarray], ncols: int = 8, gap: int = 2) -> np.ndarray:
    """Tile ``(H, W, 3)`` uint8 stamps of equal size into one image (rows of ``ncols``, grey gaps)."""
    h, w, _ = stamps[0].shape
    nrows = -(-len(stamps) // ncols)
    sheet = np.full((nrows * (h + gap) + gap, ncols * (w + gap) + gap, 3), 40, np.uint8)
    for k, s in enumerate(stamps):
        r, c = divmod(k, ncols)
        sheet[
            gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w
        ] = s
    return sheet


def write_preview(
    job_dir: Path,
    truth_rows: list[dict],
    path: Path,
    n: int = 64,
    minimum: float = -1.0,
    stretch: float = 40.0,
    q: float = 8.0,
) -> Path:
    """Write an 8x8 contact sheet of the first ``n`` untrimmed cutouts (read back from the job's FITS).

    Colours are i, r, g as red, green, blue (astropy ``make_lupton_rgb``); ``minimum`` slightly below
    zero shows the sky noise, as DESaccess's own PNGs (minimum 1, stretch 50, Q 10) do not.

    Args:
        job_dir: the job folder.
        truth_rows: truth rows (``id``, ``tilename``, ``trimmed``).
        path: PNG to write.
        n: number of stamps.
        minimum, stretch, q: Lupton parameters in counts at zero point 30.

    Returns:
        ``path``.
    """
    from astropy.visualization import make_lupton_rgb
    from PIL import Image

    stamps = []
    for row in sorted(truth_rows, key=lambda r: r["index"]):
        if row["trimmed"]:
            continue
        folder = job_dir / row["tilename"] / row["id"]
        i, r, g = (fitsio.read(str(folder / f"{row['id']}_{b}.fits"), ext=0) for b in "irg")
        rgb = make_lupton_rgb(i, r, g, minimum=minimum, stretch=stretch, Q=q)
        stamps.append(rgb[::-1])  # FITS row 0 is the bottom of the image
        if len(stamps) == n:
            break
    with atomic_output(path) as tmp:
        Image.fromarray(contact_sheet(stamps)).save(tmp, format="PNG")
    return path
