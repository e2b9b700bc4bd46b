"""Encoders, decoder and heads: shapes, the ResNet adaptation, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from galmoco.errors import GalmocoError
from galmoco.models.decoders import ConvDecoder
from galmoco.models.encoders import ConvEncoder, build_encoder, resnet_encoder
from galmoco.models.heads import ProjectionHead


def test_conv_encoder_and_decoder_shapes():
    enc = ConvEncoder(4, 128, (16, 32, 64, 128))
    dec = ConvDecoder(4, 128, (16, 32, 64, 128), 64)
    x = torch.randn(3, 4, 64, 64)
    z = enc(x)
    assert z.shape == (3, 128)
    assert dec(z).shape == (3, 4, 64, 64)
    assert ConvEncoder(4, 16, (8, 16))(torch.randn(2, 4, 32, 32)).shape == (2, 16)


@pytest.mark.parametrize("size", [40, 45, 228])
def test_decoder_draws_any_side_centre_cropped(size):
    # 228 px: DESaccess's default 1 arcmin cutout; 16 does not divide it
    dec = ConvDecoder(2, 8, (8, 8, 8, 8), size)
    z = torch.randn(3, 8)
    out = dec(z)
    assert out.shape == (3, 2, size, size)
    drawn = dec.up(torch.relu(dec.fc(z).view(3, 8, dec.start, dec.start)))
    pad = drawn.shape[-1] - size
    assert 0 < pad < 16
    lo = pad // 2
    assert torch.equal(out, drawn[..., lo:lo + size, lo:lo + size])
    out.sum().backward()
    assert dec.fc.weight.grad is not None and dec.fc.weight.grad.abs().sum() > 0


def test_resnet18_adapted_to_bands_and_small_stamps():
    net = resnet_encoder("resnet18", 5, 64)
    assert net.conv1.in_channels == 5 and net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert net(torch.randn(2, 5, 32, 32)).shape == (2, 64)


def test_build_encoder_unknown_arch():
    with pytest.raises(GalmocoError, match="model.arch"):
        build_encoder("vgg", 4, 8, (8,))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_heads_are_l2_normalised(kind):
    head = ProjectionHead(16, 8, kind)
    out = head(torch.randn(5, 16))
    assert out.shape == (5, 8)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-6)
    assert isinstance(head.net, nn.Linear) == (kind == "linear")


def test_identity_head_is_the_normalised_latent():
    latent = torch.randn(5, 16)
    assert torch.allclose(ProjectionHead(16, 16, "identity")(latent), F.normalize(latent, dim=1))
    assert not list(ProjectionHead(16, 16, "identity").parameters())
    with pytest.raises(GalmocoError, match="proj_dim == model.latent_dim"):
        ProjectionHead(16, 8, "identity")
