"""galmoco.models.cmc: band-group views, one encoder per view, and a short CMC fit on toy data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from galmoco.errors import GalmocoError
from galmoco.models.cmc import CMCEncoder, parse_views
from galmoco.models.encoders import build_encoder
from galmoco.models.memory_bank import MultiViewNCE


def test_parse_views():
    assert parse_views("gr,iz", ("g", "r", "i", "z")) == ((0, 1), (2, 3))
    assert parse_views("z, g", "griz") == ((3,), (0,))


@pytest.mark.parametrize("spec, message", [
    ("griz", "at least two"), ("gr,", "at least two"), ("gr,iy", "'y' is not in the store"),
    ("gr,ri", "more than one view")])
def test_parse_views_rejects(spec, message):
    with pytest.raises(GalmocoError, match=message):
        parse_views(spec, ("g", "r", "i", "z"))


class _ChannelSum(nn.Module):
    """A stand-in encoder that reports which channels it was given."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.c
        return x.sum(dim=(2, 3))


def test_each_encoder_sees_its_views_bands_and_embeddings_concatenate():
    x = torch.arange(4.0).view(1, 4, 1, 1).repeat(2, 1, 3, 3)  # band b is constant b
    model = CMCEncoder(((0, 2), (3,)), _ChannelSum)
    assert [enc.c for enc in model.encoders] == [2, 1]
    latents = model.view_latents(x)
    torch.testing.assert_close(latents[0], torch.tensor([[0.0, 18.0]] * 2))  # bands g, i (9 pixels)
    torch.testing.assert_close(latents[1], torch.tensor([[27.0]] * 2))  # band z
    torch.testing.assert_close(model(x), torch.cat(latents, dim=1))


def test_conv_encoders_per_view_have_the_right_input_width():
    model = CMCEncoder(parse_views("gr,iz", "griz"), lambda c: build_encoder("conv", c, 8, (8, 8)))
    assert model(torch.randn(3, 4, 16, 16)).shape == (3, 16)
    assert [enc.features[0][0].in_channels for enc in model.encoders] == [2, 2]


def _toy_images(n: int) -> torch.Tensor:
    """Blobs at random positions, the same position in every band but different band fluxes."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    centre = torch.rand(n, 2, generator=gen) * 10 + 3
    blob = torch.exp(-((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2) / 6)
    flux = torch.rand(n, 4, 1, 1, generator=gen) + 0.5
    return blob[:, None] * flux + 0.05 * torch.randn(n, 4, 16, 16, generator=gen)


def test_cmc_softmax_loss_falls_on_toy_data():
    torch.manual_seed(0)
    images = _toy_images(64)
    model = CMCEncoder(parse_views("gr,iz", "griz"), lambda c: build_encoder("conv", c, 16, (8, 16)))
    nce = MultiViewNCE(n_data=64, dim=16, n_views=2, k=32, temperature=0.1, momentum=0.5, use_softmax=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _epoch in range(8):
        total = 0.0
        for batch in torch.randperm(64).split(16):
            views = [F.normalize(v, dim=1) for v in model.view_latents(images[batch])]
            target = torch.zeros(len(batch), dtype=torch.long)  # the positive is column 0
            loss = sum(F.cross_entropy(s, target) for s in nce(views, batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / 4)
    assert losses[-1] < 0.7 * losses[0], losses
