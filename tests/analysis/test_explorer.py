"""galmoco explore: the page renders in a real headless Chromium without script errors, with the plot and
a neighbour panel; a screenshot is saved; 2,000 galaxies of 4x64x64 make a page under 15 MB; large sets
are drawn downsampled while neighbours come from all galaxies."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from galmoco.analysis.explorer import build_explorer
from galmoco.config import ModelConfig, TrainConfig, config_to_dict
from galmoco.embed import embed_store
from galmoco.io.store import read_store_contract, write_store
from galmoco.models.galaxy import GalaxyModel
from galmoco.train.checkpoint import save_checkpoint

SCREENSHOTS = Path(os.environ.get("GALMOCO_TEST_ARTIFACTS", "runs/test-artifacts"))


def find_browser() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome")
    return next((shutil.which(n) for n in names if shutil.which(n)), None)


@pytest.fixture
def browser() -> str:
    found = find_browser()
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no Chromium on PATH in CI: scripts/install_browser.sh must run before the tests")
        pytest.skip("no Chromium on PATH (install it with scripts/install_browser.sh)")
    return found


def survey(root: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """A run dir whose embeddings cover a store of ``n`` noisy 4-band blobs (worst case for JPEG)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    radius = rng.uniform(2, 8, n)[:, None, None]
    blob = 100 * np.exp(-np.hypot(yy, xx)[None] / radius)
    colour = np.linspace(0.5, 1.5, 4)[None, :, None, None]
    images = rng.normal(0, 3, (n, 4, size, size)) + blob[:, None] * colour
    kinds = np.where(radius[:, 0, 0] > 5, "disk", "compact")
    store = write_store(root / "s.h5", images.astype(np.float32), catalog={
        "id": [f"g{i:06d}" for i in range(n)], "ra": rng.uniform(10, 11, n), "dec": rng.uniform(-1, 0, n),
        "class": kinds})
    config = TrainConfig(objective="ae", model=ModelConfig(latent_dim=8, widths=(4, 8)))
    torch.manual_seed(0)
    model = GalaxyModel(config, tuple("griz"), size, [3.0] * 4)
    contract = read_store_contract(store).trained_with(config_to_dict(config.normalize), (3.0,) * 4)
    run = root / "run"
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(config), "bands": "griz",
                     "image_size": size, "sky_sigma": [3.0] * 4, "contract": contract.to_dict()},
                    run / "checkpoints" / "last.pt")
    embed_store(run, store, run / "embeddings.parquet", device="cpu", batch_size=500)
    return run


@pytest.mark.slow
def test_page_renders_in_chromium(tmp_path, browser):
    run = survey(tmp_path, 2000)
    done = subprocess.run([sys.executable, "-m", "galmoco", "explore", run, "-o", tmp_path / "explorer.html"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "explorer.html"
    assert page.stat().st_size < 15 * 2**20
    text = page.read_text()
    assert "2,000 of 2,000 galaxies drawn, coloured by class" in text
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text)  # self-contained
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]
    dom = subprocess.run([browser, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    ready = re.search(r'data-galmoco-ready="canvases=(\d+);neighbour_images=(\d+)"', dom.stdout)
    assert ready, "the page never marked itself rendered"
    assert int(ready.group(1)) >= 1 and int(ready.group(2)) == 7  # the query and its 6 neighbours
    assert "data-galmoco-error" not in dom.stdout
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not console_errors, console_errors
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "explorer.png"
    subprocess.run([browser, *flags, "--window-size=1250,720", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000


def test_large_sets_are_drawn_downsampled(tmp_path):
    run = survey(tmp_path, 600, size=16)
    page = build_explorer(run, tmp_path / "e.html", max_points=100, k=3, colour="ra")
    text = page.read_text()
    assert "100 of 600 galaxies drawn, coloured by ra" in text
    # thumbnails: the 100 drawn plus their neighbours from all 600, each once
    n_thumbs = text.count("data:image/jpeg;base64,")
    assert 100 < n_thumbs <= 100 * 4
    with pytest.raises(Exception, match="--colour 'nope': not a catalogue column"):
        build_explorer(run, tmp_path / "f.html", colour="nope")
