"""The main job end to end on the embedded default (a simulated DES-like survey).

simulate (every galaxy observed twice) -> pack both observations (truth joined) -> train ``ae`` and
``moco-ae`` on the first -> embed with the 7 symmetries, turns by :data:`DEMO_ANGLES` and a random
angle, and the second observation -> similarity placement (with its breakdown by magnitude) -> probes
-> ``report.html``, then the headline tables of what the report shows. Every stage that already
finished in ``out`` is reused, so an interrupted demo continues where it stopped. ``make demo`` runs
this with its defaults; ``galmoco demo`` exposes the knobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
from astropy.table import Table

from galmoco.errors import GalmocoError

__all__ = ["DEMO_ANGLES", "DEMO_EPOCHS", "DEMO_RECIPE", "DEMO_RUNS", "STUDY_RANK", "DemoResult",
           "breakdown_table", "demo_config", "demo_runs", "headline_table", "run_demo", "symmetry_table"]

#: the two runs the demo compares: the reconstruction-only baseline and the default objective
DEMO_RUNS: tuple[str, ...] = ("ae", "moco-ae")
#: rows left out of placement: empty-sky stamps have no galaxy whose copy could be recognised
EXCLUDE = ("class", "empty")
#: stamp side in pixels (DES: 64 px = 0.28 arcmin); cutouts trimmed at tile edges are padded to it
STAMP = 64
#: the turns outside the D4 group the demo embeds (degrees; plus ``rotrand``, a random angle per galaxy):
#: two angles keep the extra embedding cheap (``galmoco embed`` defaults to 15, 30, 45, 60, 75)
DEMO_ANGLES = (30.0, 45.0)
#: the rows of the brightness breakdown: a random turn and the second observation
BREAKDOWN_ROWS = ("rotrand", "observed_again")
#: the original study's histogram bin: the fraction of flipped copies placed within this rank
STUDY_RANK = 40
#: r-band magnitude below which the study's setting is read apart (the bright, resolved galaxies)
BRIGHT_MAG_R = 20.0


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out: the demo folder; report: ``out/report.html``; store: the packed dataset (first
        observation); headline: one row per transform (and the second observation) with the rank-1
        fraction and median rank of each run, then the reconstruction errors (see
        :func:`headline_table`); breakdown: :func:`breakdown_table`; seconds: wall time per stage;
        symmetry: :func:`symmetry_table` (the original study's reading of the flips and quarter turns).
    """

    out: Path
    report: Path
    store: Path
    headline: Table
    reconstruction: Table
    breakdown: Table
    seconds: dict[str, float] = field(default_factory=dict)
    symmetry: Table | None = None


#: training epochs of each demo run (about 4 minutes each for 2,000 galaxies on 2 CPU cores)
DEMO_EPOCHS = 20
#: the small-survey recipe: the library defaults with many small steps (a survey of a few thousand
#: galaxies gives only ~15 steps per epoch at the default batch of 128; the learning rate scales
#: linearly with the batch). Measured on the simulated survey.
DEMO_RECIPE = {"batch_size": 32}


def demo_runs(frame: str | None = None) -> tuple[str, ...]:
    """The run folders of the demo: :data:`DEMO_RUNS`, suffixed ``-<frame>`` for another encoder frame than
    the library's default (``galmoco demo --frame none``: ``ae-none``, ``moco-ae-none``), so the runs of
    both frames can share one demo folder, its survey and its datasets."""
    from galmoco.config import ModelConfig

    if frame is None or frame == ModelConfig.frame:
        return DEMO_RUNS
    return tuple(f"{run}-{frame}" for run in DEMO_RUNS)


def demo_config(objective: str, n: int, epochs: int | None = None, device: str = "auto", seed: int = 0,
                frame: str | None = None):
    """The training configuration of one demo run: the library defaults with :data:`DEMO_RECIPE`,
    ``epochs`` (default :data:`DEMO_EPOCHS`), ``device``, ``seed`` and the encoder's ``frame`` (default:
    the library's); the batch shrinks further (to a multiple of the split-BN splits) when ``n`` objects
    would give fewer than 8 steps per epoch."""
    from galmoco.config import TrainConfig, apply_overrides

    recipe = DEMO_RECIPE if frame is None else {**DEMO_RECIPE, "model.frame": frame}
    config = apply_overrides(TrainConfig(objective=objective, device=device, seed=seed,
                                         epochs=epochs or DEMO_EPOCHS), recipe)
    n_train = int(n * (1 - config.val_fraction))
    splits = config.moco.bn_splits
    if n_train < 8 * config.batch_size:
        config.batch_size = max(splits, (n_train // 8) // splits * splits)
    return config.validate()


def _store_complete(path: Path) -> bool:
    if not path.is_file():
        return False
    with h5py.File(path, "r") as f:
        return bool(f.attrs.get("complete", False))


def run_demo(
    out: str | Path = "runs/demo",
    n: int = 2000,
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    workers: int = 2,
    echo: Callable[[str], None] = print,
    frame: str | None = None,
) -> DemoResult:
    """Run the main job on a simulated survey and write ``out/report.html``.

    Args:
        out: folder for everything the demo writes (survey, dataset, runs, report).
        n: galaxies to simulate.
        epochs: training epochs of each run (default :data:`DEMO_EPOCHS`).
        device: ``cpu``, ``cuda`` or ``auto``.
        seed: seeds the survey and the training runs.
        workers: processes for simulation and packing.
        echo: where progress lines go.
        frame: the encoder's frame (``model.frame``) of both runs; default the library's (``o2``).
            Another frame trains into :func:`demo_runs`'s folders and writes ``out/report-<frame>.html``:
            ``none`` is the original study's setting, where the invariance to flips must be learned.

    Returns:
        A :class:`DemoResult`.
    """
    from galmoco.analysis.report import build_report
    from galmoco.analysis.rundir import EMBEDDINGS, find_embeddings
    from galmoco.embed import embed_store
    from galmoco.sim.simulate import observation_folder, simulate_survey
    from galmoco.train import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    survey, store, again = out / "survey", out / "dataset.h5", out / "dataset_observed_again.h5"

    t0 = time.perf_counter()
    truth = survey / "truth.fits"
    if truth.is_file() and (observation_folder(survey, 2) / "truth.fits").is_file():
        echo(f"[1/4] survey: reusing {survey}")
    else:
        echo(f"[1/4] simulating {n} galaxies, each observed twice -> {survey}")
        simulate_survey(n, survey, size=STAMP, seed=seed, workers=workers, preview=True, observations=2)
    seconds["simulate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for folder, path in ((survey, store), (observation_folder(survey, 2), again)):
        _pack(folder, path, workers, echo)
    seconds["pack"] = time.perf_counter() - t0

    runs = demo_runs(frame)
    for objective, run in zip(DEMO_RUNS, runs, strict=True):
        t0 = time.perf_counter()
        run_dir = out / run
        config = demo_config(objective, n, epochs, device, seed, frame)
        done = _epochs_done(run_dir)
        if done >= config.epochs:
            echo(f"[3/4] {objective}: reusing {run_dir}")
        else:
            echo(f"[3/4] training {objective} for {config.epochs} epochs -> {run_dir}")
            train(config, store, run_dir, resume=done > 0)
        seconds[f"train {objective}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = out / ("report.html" if runs == DEMO_RUNS else f"report-{frame}.html")
    echo(f"[4/4] embedding, placement, probes and report -> {report}")
    for r in runs:
        if find_embeddings(out / r) is None:
            embed_store(out / r, store, out / r / EMBEDDINGS, transforms=True, device=device,
                        angles=DEMO_ANGLES, seed=seed)
    build_report([out / r for r in runs], report, store=store, device=device, seed=seed,
                 exclude_column=EXCLUDE[0], exclude_value=EXCLUDE[1], observed_again=again)
    seconds["report"] = time.perf_counter() - t0
    headline, recon = headline_table(out, runs)
    return DemoResult(out, report, store, headline, recon, breakdown_table(out, runs), seconds,
                      symmetry_table(out, runs))


def _pack(folder: Path, store: Path, workers: int, echo: Callable[[str], None]) -> None:
    """Pack the DESaccess job folder beside ``folder/truth.fits`` (truth joined) unless already done."""
    from galmoco.io.pack import pack_cutouts

    if _store_complete(store):
        echo(f"[2/4] dataset: reusing {store}")
        return
    echo(f"[2/4] packing -> {store}")
    job = next(p for p in folder.iterdir() if p.is_dir() and len(p.name) == 32)  # the job, not observation2/
    result = pack_cutouts([job], store, size=STAMP, pad=True, workers=workers, catalog=folder / "truth.fits",
                          resume=store.with_name(store.name + ".partial").exists())
    echo(f"      packed {result.n_packed} objects, skipped {len(result.skipped)}")


def _epochs_done(run_dir: Path) -> int:
    """Epochs recorded in ``run_dir/metrics.csv`` with a checkpoint beside them (0 when none)."""
    metrics = run_dir / "metrics.csv"
    if not (run_dir / "checkpoints" / "last.pt").is_file() or not metrics.is_file():
        return 0
    return len(Table.read(metrics, format="ascii.csv"))


def headline_table(out: str | Path, runs: tuple[str, ...] = DEMO_RUNS) -> tuple[Table, Table]:
    """The demo's headline, read back from the files the report wrote into each run directory.

    Returns:
        ``(placement, reconstruction)``: per transform (and ``observed_again``), the fraction of copies
        at rank 1 and their median rank for each run (``rank1_<run>``, ``median_<run>``); per run, the
        masked reconstruction MSE on galaxy and sky pixels.
    """
    out = Path(out)
    placement = None
    recon = Table(names=("run", "galaxy_mse", "sky_mse"), dtype=(str, float, float))
    for run in runs:
        summary_path, recon_path = out / run / "placement_summary.csv", out / run / "reconstruction.csv"
        for p in (summary_path, recon_path):
            if not p.is_file():
                raise GalmocoError(f"{p}: missing; run the report step first")
        summary = Table.read(summary_path, format="ascii.csv")
        if placement is None:
            placement = Table({"transform": summary["transform"], "n": summary["n"]})
        placement[f"rank1_{run}"] = summary["frac_rank1"]
        placement[f"median_{run}"] = summary["median"]
        row = Table.read(recon_path, format="ascii.csv")[0]
        recon.add_row((run, float(row["source_mse"]), float(row["sky_mse"])))
    return placement, recon


def breakdown_table(out: str | Path, runs: tuple[str, ...] = DEMO_RUNS, column: str = "mag_r") -> Table:
    """The rank-1 fraction of :data:`BREAKDOWN_ROWS` by ``column`` bin, one row per run and transform,
    read from each run's ``placement_breakdown.csv`` (columns: ``run``, ``transform``, then one per bin
    with its object count, as :func:`galmoco.analysis.placement_tables.breakdown_pivot` names them)."""
    from astropy.table import vstack

    from galmoco.analysis.placement_tables import breakdown_pivot

    parts = []
    for run in runs:
        path = Path(out) / run / "placement_breakdown.csv"
        if not path.is_file():
            raise GalmocoError(f"{path}: missing; run the report step first")
        pivot = breakdown_pivot(Table.read(path, format="ascii.csv"), column)
        pivot = pivot[[str(t) in BREAKDOWN_ROWS for t in pivot["transform"]]]
        pivot.add_column([run] * len(pivot), name="run", index=0)
        parts.append(pivot)
    return vstack(parts)


def symmetry_table(out: str | Path, runs: tuple[str, ...] = DEMO_RUNS, rank: int = STUDY_RANK,
                   bright: float = BRIGHT_MAG_R) -> Table:
    """The original study's reading of the 7 flips and quarter turns, pooled over the seven, per run,
    from each run's ``placement_ranks.fits``.

    Returns:
        Columns ``run``, ``rank1`` (fraction of copies ranked 1st), ``rank1_bright`` (the same for
        ``mag_r < bright``), ``within_rank`` (fraction ranked ``rank`` or better, the study's histogram
        bin) and ``n`` (galaxies placed); ``meta["rank"]`` and ``meta["bright"]`` hold the two limits.
    """
    import numpy as np

    from galmoco.data.transforms import TRANSFORMS

    table = Table(names=("run", "rank1", "rank1_bright", "within_rank", "n"),
                  dtype=(str, float, float, float, int), meta={"rank": rank, "bright": bright})
    for run in runs:
        path = Path(out) / run / "placement_ranks.fits"
        if not path.is_file():
            raise GalmocoError(f"{path}: missing; run the report step first")
        ranks_table = Table.read(path)
        ranks = np.stack([np.asarray(ranks_table[t]) for t in TRANSFORMS])
        is_bright = np.asarray(ranks_table["mag_r"], dtype=float) < bright
        table.add_row((run, np.mean(ranks == 1), np.mean(ranks[:, is_bright] == 1),
                       np.mean(ranks <= rank), len(ranks_table)))
    return table
