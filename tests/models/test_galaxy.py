"""GalaxyModel from its own small config: the heads each objective gives, inference models built without
training settings, and checkpoints (which hold the full TrainConfig) loading into it."""

from __future__ import annotations

import pytest
import torch

from galmoco.config import GalaxyModelConfig, ModelConfig, TrainConfig, config_to_dict
from galmoco.errors import GalmocoError
from galmoco.models import GalaxyModel
from galmoco.train.checkpoint import load_model, save_checkpoint

SMALL = ModelConfig(widths=(8, 16), latent_dim=8, proj_dim=4, head="linear")


@pytest.mark.parametrize("objective, projects, reconstructs, views", [
    ("ae", False, True, None), ("moco", True, False, None), ("moco-ae", True, True, None),
    ("insdis", True, False, None), ("cmc", False, False, "gr,iz"),
])
def test_each_objective_gives_its_heads(objective, projects, reconstructs, views):
    config = TrainConfig(objective=objective, model=SMALL).model_config()
    assert (config.projects, config.reconstructs, config.views, config.objective) == (
        projects, reconstructs, views, objective)
    model = GalaxyModel(config, "griz", 16, [1.0] * 4)
    assert (model.head is not None, model.decoder is not None) == (projects, reconstructs)
    assert model.encode(torch.randn(2, 4, 16, 16)).shape == (2, 8)


def test_inference_model_without_training_settings_loads_a_checkpoint(tmp_path):
    train_config = TrainConfig(objective="moco-ae", model=SMALL, seed=3)
    torch.manual_seed(0)
    trained = GalaxyModel(train_config, "gr", 16, [0.5, 0.5])
    path = save_checkpoint({"model": trained.state_dict(), "config": config_to_dict(train_config),
                            "bands": "gr", "image_size": 16, "sky_sigma": [0.5, 0.5]}, tmp_path / "last.pt")
    loaded = load_model(path)
    assert isinstance(loaded.config, GalaxyModelConfig) and loaded.config.objective == "moco-ae"
    # the same network from a model config alone: no optimiser, augmentation, queue or data settings
    inference = GalaxyModel(GalaxyModelConfig(model=SMALL, projects=True, reconstructs=True), "gr", 16,
                            [0.5, 0.5]).eval()
    inference.load_state_dict(torch.load(path, weights_only=True)["model"])
    images = torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(inference.encode(images), loaded.encode(images))
        assert torch.equal(inference.reconstruct(images), loaded.reconstruct(images))


def test_missing_parts_are_named():
    model = GalaxyModel(GalaxyModelConfig(model=SMALL, reconstructs=False), "gr", 16, [1.0, 1.0])
    with pytest.raises(GalmocoError, match="this model has no decoder"):
        model.decode(torch.zeros(1, 8))
    moco = GalaxyModel(TrainConfig(objective="moco", model=SMALL), "gr", 16, [1.0, 1.0])
    with pytest.raises(GalmocoError, match="objective 'moco' has no decoder"):
        moco.decode(torch.zeros(1, 8))


def test_a_checkpoint_of_an_earlier_version_loads_as_it_was_trained(tmp_path):
    """Written before model.photometry and model.compact_size (and with the since-replaced
    augment.psf_change): no photometric part, no magnified compact objects, and the same latents as the
    network it was saved from."""
    old = TrainConfig(objective="moco-ae", model=ModelConfig(widths=(8, 16), latent_dim=8, photometry=False,
                                                             compact_size=0.0))
    torch.manual_seed(0)
    trained = GalaxyModel(old, "gr", 16, [0.5, 0.5]).eval()
    config = config_to_dict(old)
    del config["model"]["photometry"], config["model"]["compact_size"]
    config["augment"]["psf_change"] = 0.0
    path = save_checkpoint({"model": trained.state_dict(), "config": config, "bands": "gr", "image_size": 16,
                            "sky_sigma": [0.5, 0.5]}, tmp_path / "last.pt")
    loaded = load_model(path)
    assert loaded.config.model.photometry is False and loaded.config.model.compact_radius == 0
    assert TrainConfig().model.compact_radius > 0  # a new o2 model magnifies them
    images = torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), trained.encode(images))


def test_an_earlier_checkpoint_without_a_frame_still_draws_as_given(tmp_path):
    """Written before model.draw_frame, a ``frame: none`` model drew the stamp as given (and had the
    photometric part); a new one draws in the pose frame, without it, unless told otherwise."""
    old = TrainConfig(objective="ae", model=ModelConfig(widths=(8, 16), latent_dim=8, frame="none",
                                                        draw_frame="none", photometry=True))
    torch.manual_seed(0)
    trained = GalaxyModel(old, "gr", 16, [0.5, 0.5]).eval()
    config = config_to_dict(old)
    del config["model"]["draw_frame"]
    path = save_checkpoint({"model": trained.state_dict(), "config": config, "bands": "gr", "image_size": 16,
                            "sky_sigma": [0.5, 0.5]}, tmp_path / "last.pt")
    loaded = load_model(path)
    assert (loaded.draw_frame, loaded.config.model.has_photometry) == ("none", True)
    new = TrainConfig(model=ModelConfig(frame="none")).model
    assert (new.decoder_frame, new.has_photometry) == ("o2", False)
    images = 1 + torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct(images), trained.decoder(trained.encode(images)))
