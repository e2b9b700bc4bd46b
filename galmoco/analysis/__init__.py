"""Analysis of trained representations: similarity placement, neighbours, probes, plots and reports.

Modules: :mod:`~galmoco.analysis.placement` (exact ranks of transformed copies),
:mod:`~galmoco.analysis.placement_tables` (their tables, summaries and breakdowns),
:mod:`~galmoco.analysis.explorer` (the interactive latent-space page), :mod:`~galmoco.analysis.gallery`
(search results as images),
:mod:`~galmoco.analysis.neighbours`, :mod:`~galmoco.analysis.probes`,
:mod:`~galmoco.analysis.reconstruction`, :mod:`~galmoco.analysis.plots`,
:mod:`~galmoco.analysis.rundir` (the files the analysis keeps in a run directory) and
:mod:`~galmoco.analysis.report` (the HTML report).
"""

from galmoco.analysis.neighbours import nearest_neighbours
from galmoco.analysis.placement import placement_ranks
from galmoco.analysis.placement_tables import placement_summary, placement_table
from galmoco.analysis.probes import run_probes
from galmoco.analysis.reconstruction import reconstruction_errors
from galmoco.analysis.report import build_report

__all__ = ["build_report", "nearest_neighbours", "placement_ranks", "placement_summary", "placement_table",
           "reconstruction_errors", "run_probes"]
