"""TrainConfig: YAML round trip, unknown keys, overrides, validation, the automatic queue size."""

from __future__ import annotations

import pytest

from galmoco.config import (
    ModelConfig,
    TrainConfig,
    apply_overrides,
    auto_queue_size,
    load_config,
    save_config,
)
from galmoco.errors import GalmocoError


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(TrainConfig(), {"model.widths": (8, 16), "optim.lr": 0.5, "mask.rule": "positive",
                                          "sky_sigma": (1.0, 2.0)})
    path = save_config(cfg, tmp_path / "c.yaml")
    back = load_config(path)
    assert back == cfg
    assert back.model.widths == (8, 16) and back.sky_sigma == (1.0, 2.0)


def test_partial_yaml_keeps_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nmoco:\n  temperature: 0.5\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.epochs == 3 and cfg.moco.temperature == 0.5 and cfg.batch_size == TrainConfig().batch_size


def test_unknown_keys_are_named(tmp_path):
    (tmp_path / "c.yaml").write_text("epoch: 3\nmoco:\n  temprature: 0.2\n")
    with pytest.raises(GalmocoError, match=r"c.yaml: unknown key\(s\) epoch"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("moco:\n  temprature: 0.2\n")
    with pytest.raises(GalmocoError, match=r"moco.temprature; valid keys under moco are queue_size"):
        load_config(tmp_path / "d.yaml")


def test_wrong_types_are_named(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: ten\n")
    with pytest.raises(GalmocoError, match="c.yaml: epochs must be int, got 'ten'"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("moco:\n  shuffle_bn: 1\n  temperature: 1\n")
    with pytest.raises(GalmocoError, match="moco.shuffle_bn must be bool"):
        load_config(tmp_path / "d.yaml")
    assert apply_overrides(TrainConfig(), {"moco.temperature": 1}).moco.temperature == 1.0


def test_validate_names_the_option():
    with pytest.raises(GalmocoError, match="objective"):
        TrainConfig(objective="simclr").validate()
    with pytest.raises(GalmocoError, match="bn_splits"):
        TrainConfig(batch_size=36).validate()
    TrainConfig(batch_size=36, objective="ae").validate()  # no split-BN without a contrastive term
    config = TrainConfig()
    config.model.frame = "c4"
    with pytest.raises(GalmocoError, match="model.frame"):
        config.validate()
    config.model.frame, config.model.draw_frame = "d4", "o2"
    with pytest.raises(GalmocoError, match="model.draw_frame: bad value 'o2'; expected unset or 'd4'"):
        config.validate()
    config.model.frame = "none"  # only without a frame may the decoder draw in another
    assert config.validate().model.draw_frame == "o2"
    with pytest.raises(GalmocoError, match="model.compact_size: bad value 1.8; expected unset, 0 .off., or"):
        apply_overrides(TrainConfig(), {"model.compact_size": 1.8, "model.frame": "d4"}).validate()
    assert apply_overrides(TrainConfig(), {"model.compact_size": 1.8}).validate().model.compact_radius == 1.8
    assert apply_overrides(TrainConfig(), {"model.frame": "d4"}).validate().model.compact_radius == 0
    assert apply_overrides(TrainConfig(), {"model.compact_size": 0}).validate().model.compact_radius == 0
    assert TrainConfig().validate().model.compact_radius == pytest.approx(0.95 / 0.263 / 2)
    # InfoNCE scores by L1 in the pose frame, by the cosine without a frame, unless set
    assert TrainConfig().moco_similarity() == "l1"
    assert apply_overrides(TrainConfig(), {"model.frame": "none"}).moco_similarity() == "cosine"
    assert apply_overrides(TrainConfig(), {"moco.similarity": "cosine"}).moco_similarity() == "cosine"
    # and weighs reconstruction 1.5 with L1, 1.0 with the cosine, unless set
    assert TrainConfig().recon_weight() == 1.5
    assert apply_overrides(TrainConfig(), {"model.frame": "none"}).recon_weight() == 1.0
    assert apply_overrides(TrainConfig(), {"beta": 0.5}).recon_weight() == 0.5
    with pytest.raises(GalmocoError, match="moco.similarity: bad value .l2.; expected unset or one "
                                           "of cosine, l1"):
        apply_overrides(TrainConfig(), {"moco.similarity": "l2"}).validate()
    with pytest.raises(GalmocoError, match="model.proj_dim.*model.head identity"):
        apply_overrides(TrainConfig(), {"model.proj_dim": 64}).validate()
    apply_overrides(TrainConfig(), {"model.proj_dim": 64, "model.head": "linear"}).validate()


def test_auto_queue_size():
    assert auto_queue_size(100_000, 256) == 4096
    assert auto_queue_size(1000, 128) == 384  # largest multiple of 128 <= 500
    assert auto_queue_size(100, 64) == 64  # at least one batch


def test_lr_scaling_rule():
    cfg = TrainConfig()
    assert cfg.scaled_lr(512) == pytest.approx(3.2e-2)  # AdamW base 1.6e-2 x 512 / 256
    assert apply_overrides(cfg, {"optim.optimizer": "sgd"}).scaled_lr(256) == pytest.approx(0.03)


def test_learning_rate_and_temperature_follow_the_frame_unless_set():
    """Without a frame the flips must be learned: AdamW's rate doubles and InfoNCE sharpens to 0.1;
    in a frame 1.6e-2 and MoCo v2's 0.2; SGD keeps MoCo's 0.03; an explicit value wins."""
    none = apply_overrides(TrainConfig(), {"model.frame": "none"}).validate()
    assert (none.base_lr(), none.moco_temperature()) == (3.2e-2, 0.1)
    assert none.scaled_lr(32) == pytest.approx(4e-3)  # the demo's batch
    for frame in ("o2", "d4"):
        framed = apply_overrides(TrainConfig(), {"model.frame": frame}).validate()
        assert (framed.base_lr(), framed.moco_temperature()) == (1.6e-2, 0.2)
    assert apply_overrides(none, {"optim.optimizer": "sgd"}).base_lr() == 0.03
    explicit = apply_overrides(none, {"optim.lr": 1e-3, "moco.temperature": 0.07})
    assert (explicit.base_lr(), explicit.moco_temperature()) == (1e-3, 0.07)
    assert (none.optim.lr, none.moco.temperature) == (None, None)  # the saved config keeps them unset


@pytest.mark.parametrize("frame, rotate, expected", [("o2", None, False), ("d4", None, True),
                                                     ("none", None, True), ("o2", True, True),
                                                     ("none", False, False)])
def test_rotation_augmentation_follows_the_frame_unless_set(frame, rotate, expected):
    """The pose frame undoes a view's turn, so by default it is not drawn there; an explicit value wins."""
    from galmoco.data.augment import GalaxyAugment

    cfg = apply_overrides(TrainConfig(), {"model.frame": frame, "augment.rotate": rotate}).validate()
    assert cfg.augment.rotate is rotate and cfg.augment_config().rotate is expected
    angle = GalaxyAugment(cfg.augment_config(), [1.0] * 4).sample(8).angle
    assert (angle is not None) is expected


def test_photometry_and_the_decoder_frame_follow_the_encoder_frame_unless_set():
    """Without a frame the photometric part (exactly unchanged by flips) is off and the decoder draws in
    the pose frame; in a frame, on and the frame itself; an explicit value wins."""
    from galmoco.models import GalaxyModel
    from galmoco.models.photometry import PhotometricEncoder

    resolved = {f: (ModelConfig(frame=f).has_photometry, ModelConfig(frame=f).decoder_frame)
                for f in ("o2", "d4", "none")}
    assert resolved == {"o2": (True, "o2"), "d4": (True, "d4"), "none": (False, "o2")}
    assert ModelConfig(frame="none", photometry=True).has_photometry
    assert not ModelConfig(photometry=False).has_photometry
    assert ModelConfig(frame="none", draw_frame="none").decoder_frame == "none"
    for frame, wrapped in (("o2", True), ("none", False)):
        cfg = apply_overrides(TrainConfig(), {"model.frame": frame}).validate()
        assert isinstance(GalaxyModel(cfg, "griz", 64, [1.0] * 4).encoder, PhotometricEncoder) is wrapped


@pytest.mark.parametrize("pool", [1, 2, 4])
def test_pooling_of_the_last_stage(pool):
    """``model.pool`` sets the map the conv encoder's linear layer reads: ``pool x pool`` cells."""
    from galmoco.models import GalaxyModel

    cfg = apply_overrides(TrainConfig(), {"model.pool": pool}).validate()
    conv = GalaxyModel(cfg, "griz", 64, [1.0] * 4).encoder.encoder  # inside the photometric wrapper
    assert conv.pool.output_size == pool and conv.fc.in_features == 128 * pool**2
    assert TrainConfig().model.pool == 4
    with pytest.raises(GalmocoError, match="model.pool: .*at least 1"):
        apply_overrides(TrainConfig(), {"model.pool": 0}).validate()
