"""Analysis of trained representations: similarity placement, neighbours, probes, plots and reports.

Modules: :mod:`~galmoco.analysis.placement` (exact ranks of transformed copies),
:mod:`~galmoco.analysis.neighbours`, :mod:`~galmoco.analysis.probes`,
:mod:`~galmoco.analysis.reconstruction`, :mod:`~galmoco.analysis.plots`,
:mod:`~galmoco.analysis.rundir` (the files the analysis keeps in a run directory) and
:mod:`~galmoco.analysis.report` (the HTML report).
"""

__all__: list[str] = []
