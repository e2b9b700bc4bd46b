"""Un-Mix image mixtures: the mixed pixels, the soft targets read back from them, and the options."""

from __future__ import annotations

import pytest
import torch

from galmoco.config import TrainConfig, load_config, save_config
from galmoco.data.mixing import (
    MixConfig,
    apply_mixing,
    centre_importance,
    mix_pixel_weights,
    sample_mixing,
    soft_targets,
)
from galmoco.errors import GalmocoError

SIZE = (24, 24)


def _draw(seed: int = 0, n: int = 16, **options):
    config = MixConfig(**options)
    mixing = sample_mixing(n, SIZE, config, generator=torch.Generator().manual_seed(seed))
    images = torch.rand(n, 3, *SIZE, generator=torch.Generator().manual_seed(100 + seed)) + 1.0
    return mixing, images, apply_mixing(images, mixing)


def test_global_mixture_targets_are_the_mixing_weights_read_from_the_pixels():
    mixing, images, mixed = _draw(method="global", global_count=1, global_prob=1.0)
    targets = soft_targets(mixing, centre_importance(SIZE, 0.1))
    assert torch.allclose(targets.sum(dim=1), torch.ones(16))
    for i in range(16):
        partner = int(mixing.sources[i, 1])
        assert partner != i
        # mixed = lam x_i + (1 - lam) x_p: lam by least squares from the pixels alone
        a, b = (images[i] - images[partner]).flatten(), (mixed[i] - images[partner]).flatten()
        lam = float(a @ b / (a @ a))
        assert torch.allclose(mixed[i], lam * images[i] + (1 - lam) * images[partner], atol=1e-5)
        assert targets[i, i].item() == pytest.approx(lam, abs=1e-5)
        assert targets[i, partner].item() == pytest.approx(1 - lam, abs=1e-5)
        assert targets[i].count_nonzero() == 2


def _pasted_pixels(images, mixed, i, partner):
    """The pixels of row ``i`` taken from ``partner`` (all three bands equal to the partner's)."""
    return (mixed[i] == images[partner]).all(dim=0) & (mixed[i] != images[i]).all(dim=0)


@pytest.mark.parametrize("sigma", [None, 0.1])
def test_region_targets_are_the_pasted_share_weighted_by_the_pixel_importance(sigma):
    mixing, images, mixed = _draw(seed=3, method="region", region_count=1, region_prob=1.0)
    targets = soft_targets(mixing, centre_importance(SIZE, sigma))
    importance = centre_importance(SIZE, sigma)
    checked = 0
    for i in range(16):
        partner = int(mixing.sources[i, 1])
        box = _pasted_pixels(images, mixed, i, partner)
        assert torch.equal(mixed[i][:, ~box], images[i][:, ~box])  # outside the box: untouched
        share = float(importance[box].sum() / importance.sum())
        assert targets[i, partner].item() == pytest.approx(share, abs=1e-5)
        assert targets[i, i].item() == pytest.approx(1 - share, abs=1e-5)
        checked += int(box.any())
    assert checked >= 8  # most boxes are not empty


def test_centre_weighting_discounts_boxes_away_from_the_galaxy():
    mixing, images, mixed = _draw(seed=5, n=64, method="region", region_count=1, region_prob=1.0)
    by_area = soft_targets(mixing, centre_importance(SIZE, None))
    by_centre = soft_targets(mixing, centre_importance(SIZE, 0.1))
    # beyond 2.35 sigma (5.6 px) a pixel's Gaussian importance is below the stamp's mean importance
    y, x = torch.meshgrid(torch.arange(24.0) - 11.5, torch.arange(24.0) - 11.5, indexing="ij")
    outskirts = (y.square() + x.square()).sqrt() > 6.0
    away = 0
    for i in range(64):
        partner = int(mixing.sources[i, 1])
        box = _pasted_pixels(images, mixed, i, partner)
        if box.any() and not (box & ~outskirts).any():
            assert by_centre[i, partner] < by_area[i, partner]
            away += 1
        if box.all():
            assert by_centre[i, partner] == pytest.approx(1.0) and by_area[i, partner] == pytest.approx(1.0)
        if box[11:13, 11:13].all():
            assert by_centre[i, partner] > by_area[i, partner]
    assert away >= 5


def test_probability_zero_draws_nothing_and_mixes_nothing():
    generator = torch.Generator().manual_seed(7)
    state = generator.get_state()
    for method in ("none", "mixture", "global", "region", "cutout", "erasing"):
        config = MixConfig(method=method, global_prob=0.0, region_prob=0.0, cutout_prob=0.0, erasing_prob=0.0)
        assert sample_mixing(8, SIZE, config, generator=generator) is None
    assert torch.equal(generator.get_state(), state)
    assert sample_mixing(8, SIZE, MixConfig(method="mixture", global_count=0, region_count=0)) is None


def test_mixture_runs_global_then_region_rounds_and_is_reproducible():
    options = dict(method="mixture", global_prob=1.0, region_prob=1.0, region_pixel_decay=0.5)
    mixing, images, mixed = _draw(seed=1, **options)
    again, _, mixed_again = _draw(seed=1, **options)
    assert torch.equal(mixed, mixed_again) and torch.equal(mixing.sources, again.sources)
    assert mixing.sources.shape == (16, 5)  # itself, 2 global partners, 2 region partners
    targets = soft_targets(mixing, centre_importance(SIZE, None))
    assert torch.allclose(targets.sum(dim=1), torch.ones(16), atol=1e-6)
    # pixel decay halves what is left of the globally mixed image, not the pixel weights
    total = mixing.coefficients.sum(dim=1)
    assert total.min() == pytest.approx(0.5) and total.max() == pytest.approx(1.0)
    undecayed, _, plain = _draw(seed=1, **{**options, "region_pixel_decay": 1.0})
    assert torch.equal(undecayed.sources, mixing.sources)
    assert torch.allclose(mixed, total[:, None] * plain)  # dimmed where no box was pasted
    weights = torch.rand(16, 1, *SIZE) + 0.5
    mixed_weights = mix_pixel_weights(weights, mixing)
    assert torch.allclose(mixed_weights, mix_pixel_weights(weights, undecayed), atol=1e-6)
    # a pixel pasted by the last region round has the last partner's weight
    last = mixing.coefficients[:, -1] == 1
    partner_weights = weights[mixing.sources[:, -1], 0]
    assert torch.equal(mixed_weights[:, 0][last], partner_weights[last])


def test_cutout_paints_a_clipped_square_of_sky_and_keeps_the_target():
    mixing, images, mixed = _draw(seed=2, method="cutout", cutout_prob=1.0, cutout_size=0.25)
    side = 6  # 0.25 of 24 px
    painted = (mixed == 0).all(dim=1)  # (N, H, W)
    assert painted.any(dim=(1, 2)).all()
    assert (painted.sum(dim=(1, 2)) <= side * side).all()
    assert torch.equal(mixed[~painted[:, None].expand_as(mixed)], images[~painted[:, None].expand_as(images)])
    assert torch.equal(soft_targets(mixing, centre_importance(SIZE, 0.1)), torch.eye(16))
    weights = mix_pixel_weights(torch.ones(16, 1, *SIZE), mixing)
    assert torch.equal(weights[:, 0] == 0, painted)


def test_erasing_fills_a_rectangle_inside_the_stamp_with_one_value():
    mixing, images, mixed = _draw(seed=4, method="erasing", erasing_prob=1.0)
    for i in range(16):
        changed = (mixed[i] != images[i]).all(dim=0)
        rows, cols = changed.any(dim=1).nonzero(), changed.any(dim=0).nonzero()
        area = int(changed.sum())
        assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a full rectangle
        assert 0.02 * 24 * 24 * 0.6 <= area <= 0.4 * 24 * 24
        values = mixed[i][:, changed]
        assert torch.all(values == values[0, 0]) and 0 <= values[0, 0] < 1


def test_options_are_checked_by_name():
    with pytest.raises(GalmocoError, match="mix.global_prob"):
        TrainConfig(mix=MixConfig(method="global", global_prob=1.5)).validate()
    with pytest.raises(GalmocoError, match="mix.method"):
        TrainConfig(mix=MixConfig(method="IM")).validate()
    with pytest.raises(GalmocoError, match="mix.method.*contrastive objective"):
        TrainConfig(objective="ae", mix=MixConfig(method="mixture")).validate()
    TrainConfig(objective="cmc", mix=MixConfig(method="region")).validate()


def test_mix_settings_survive_the_config_file(tmp_path):
    config = TrainConfig(mix=MixConfig(method="erasing", erasing_area=(0.1, 0.2), centre_sigma=None))
    again = load_config(save_config(config, tmp_path / "config.yaml"))
    assert again.mix == config.mix and isinstance(again.mix.erasing_area, tuple)
