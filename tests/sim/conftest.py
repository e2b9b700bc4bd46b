"""Fixtures for the simulator tests: one small simulated job shared by the layout and pack tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from galmoco.sim import PopulationConfig, simulate_survey


@pytest.fixture(scope="session")
def small_job(tmp_path_factory) -> Path:
    """A 40-object griz survey (seed 3) with a generous trimmed fraction so that trimming is exercised."""
    out = tmp_path_factory.mktemp("sim")
    return simulate_survey(40, out, seed=3, trimmed_fraction=0.15, preview=True)


def only(cls: str, **kwargs) -> PopulationConfig:
    """A population of one class (e.g. isolated stars for PSF measurements)."""
    return PopulationConfig(class_fractions={cls: 1.0}, **kwargs)
