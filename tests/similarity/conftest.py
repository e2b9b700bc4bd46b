"""The search tests embed the analysis tests' tiny store with their tiny trained run."""

from tests.analysis.conftest import model, run_dir, store_path  # noqa: F401
