"""The HTML report of two tiny runs: every section present, images embedded, CSVs with the right numbers."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import numpy as np
import pytest
from astropy.table import Table

from galmoco.analysis.placement import placement_ranks
from galmoco.analysis.report import SECTIONS, build_report
from galmoco.analysis.rundir import PLACEMENT_RANKS, PROBES, RECONSTRUCTION, find_embeddings
from galmoco.data.transforms import PLACEMENT_TRANSFORMS
from galmoco.embed import read_embeddings


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, int] = {}
        self.current: str | None = None
        self.headings: list[str] = []
        self._in_h2 = False
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = 0
        elif tag == "img":
            src = attrs["src"]
            if src.startswith("data:image/png;base64,"):
                assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
                self.sections[self.current] += 1
            else:
                self.external.append(src)
        elif tag in ("link", "script"):
            self.external.append(tag)
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


@pytest.mark.slow
def test_report_of_two_runs(tmp_path, store_path, make_run):
    runs = [make_run("ae", "ae", 1), make_run("moco-ae", "moco-ae", 2)]
    out = build_report(runs, tmp_path / "out" / "report.html", store=store_path, metric="l2",
                       exclude_column="class", exclude_value="empty", device="cpu", n_examples=3)
    parser = _Collect()
    parser.feed(out.read_text())
    assert list(parser.sections) == list(SECTIONS) and parser.headings == list(SECTIONS.values())
    assert not parser.external
    expected_images = {"training": 1, "placement": 1, "reconstruction": 4, "neighbours": 2, "latent-map": 2}
    for key, count in expected_images.items():
        assert parser.sections[key] == count, key
    for r in runs:  # the analysis files were left in the run dirs
        assert find_embeddings(r) and (r / PLACEMENT_RANKS).is_file() and (r / PROBES).is_file()
        assert (r / RECONSTRUCTION).is_file()
    assert (tmp_path / "out" / "report_files" / "placement_l2.pdf").is_file()

    summary = Table.read(tmp_path / "out" / "report_placement.csv", format="ascii.csv")
    assert len(summary) == 2 * len(PLACEMENT_TRANSFORMS) and set(summary["run"]) == {"ae", "moco-ae"}
    emb = read_embeddings(find_embeddings(runs[1]))
    keep = emb["class"] != "empty"
    ranks = placement_ranks(emb["latent"][keep], emb["latent_rot90"][keep], "l2")
    row = summary[(summary["run"] == "moco-ae") & (summary["transform"] == "rot90")][0]
    assert row["n"] == keep.sum() == 32 and row["n_excluded"] == 16
    assert row["frac_rank1"] == pytest.approx(np.mean(ranks == 1))
    assert row["median"] == pytest.approx(np.median(ranks))

    recon = Table.read(tmp_path / "out" / "report_reconstruction.csv", format="ascii.csv")
    assert list(recon["run"]) == ["ae", "moco-ae"] and (recon["n_objects"] == 48).all()
    assert (recon["source_mse"] > 0).all() and (recon["sky_mse"] > 0).all()
    probes = Table.read(tmp_path / "out" / "report_probes.csv", format="ascii.csv")
    assert set(probes["column"]) == {"class", "hlr_arcsec"} and len(probes) == 8


def test_report_without_dataset_marks_missing_sections(tmp_path, make_run):
    run = make_run("run", "ae", 0)
    out = build_report([run], tmp_path / "r.html")
    text = out.read_text()
    assert text.count("not available") == 6 and 'id="training"' in text and "objective: ae" in text
