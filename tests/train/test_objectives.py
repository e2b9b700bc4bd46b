"""Objectives' mechanics on one batch, and the kNN monitor on constructed latents."""

from __future__ import annotations

import pytest
import torch

from galmoco.data.augment import GalaxyAugment
from galmoco.models import GalaxyModel
from galmoco.models.moco import SplitBatchNorm
from galmoco.train.knn import encode_labels, knn_accuracy, knn_predict
from galmoco.train.objectives import AEObjective, MocoAEObjective, build_objective

from .conftest import tiny_config


def _objective(objective: str):
    cfg = tiny_config(objective=objective)
    cfg.mask.rule = "none"
    torch.manual_seed(0)
    model = GalaxyModel(cfg, "griz", 32, [1.0] * 4)
    augment = GalaxyAugment(cfg.augment, [1.0] * 4)
    return build_objective(model, augment, cfg, torch.Generator().manual_seed(0), queue_size=48)


def test_moco_ae_step_updates_queue_and_key_encoder():
    obj = _objective("moco-ae")
    assert isinstance(obj, MocoAEObjective)
    assert any(isinstance(m, SplitBatchNorm) for m in obj.model.encoder.modules())
    assert any(isinstance(m, SplitBatchNorm) for m in obj.key_encoder.modules())
    obj.train()
    images = 5 * torch.rand(32, 4, 32, 32)
    key_before = [p.clone() for p in obj.key_encoder.parameters()]
    with torch.no_grad():  # make the query differ from the key so the momentum step is visible
        for p in obj.model.encoder.parameters():
            p.add_(0.1)
    out = obj({"image": images})
    assert set(out) == {"loss", "loss_contrastive", "loss_recon"}
    cfg = obj.config
    assert torch.isclose(out["loss"], cfg.alpha * out["loss_contrastive"] + cfg.beta * out["loss_recon"])
    assert int(obj.queue.ptr) == 32
    moved = [not torch.equal(a, b) for a, b in zip(key_before, obj.key_encoder.parameters(), strict=True)]
    assert any(moved)
    out["loss"].backward()
    assert obj.model.decoder.fc.weight.grad is not None and obj.model.head.net.weight.grad is not None
    assert all(p.grad is None for p in obj.key_encoder.parameters())
    extra = obj.extra_state_dict()
    assert "queue.keys" in extra and not any(k.startswith("model.") for k in extra)


def test_ae_reconstructs_the_unaugmented_stamp():
    obj = _objective("ae")
    assert isinstance(obj, AEObjective) and obj.model.head is None
    obj.eval()
    images = 5 * torch.rand(4, 4, 32, 32)
    out = obj({"image": images})
    with torch.no_grad():
        expected = (obj.model.reconstruct(images) - obj.model.normalize(images)).pow(2).mean()
    assert torch.allclose(out["loss_recon"], expected, atol=1e-6)


def test_knn_predicts_clusters():
    centres = torch.eye(3, 8)
    bank = centres.repeat_interleave(10, 0) + 0.05 * torch.randn(30, 8)
    labels = torch.arange(3).repeat_interleave(10)
    queries = centres + 0.05 * torch.randn(3, 8)
    assert knn_predict(bank, labels, queries, 3, k=5).tolist() == [0, 1, 2]
    assert knn_accuracy(bank, labels, queries, torch.tensor([0, 1, 1]), k=5) == pytest.approx(2 / 3)
    assert encode_labels(["spiral", "elliptical", "spiral"]).tolist() == [1, 0, 1]


@pytest.mark.parametrize("frame", ["d4", "o2"])
@pytest.mark.parametrize("target", ["view", "stored"])
def test_moco_ae_reconstructs_what_the_query_view_shows(target, frame):
    obj = _objective("moco-ae")
    obj.config.recon_target = target
    obj.config.model.frame = frame
    obj.eval()
    images = 5 * torch.rand(8, 4, 32, 32)
    draws = torch.Generator().manual_seed(3)
    obj.generator = torch.Generator().manual_seed(3)
    params = obj.augment.sample(16, "cpu", draws)  # the draws contrastive() makes for both views
    q_params = type(params)(**{k: (v[:8] if v is not None else None) for k, v in vars(params).items()})
    seen = obj.augment.apply_geometry(images, q_params)
    assert not torch.equal(seen, images)  # the view really is moved
    out = obj({"image": images})
    with torch.no_grad():
        q_view = obj.model.normalize(obj.augment.apply(torch.cat([images, images]), params, draws))[:8]
        drawn = obj.model.normalize(seen if target == "view" else images)
        # the encoder reads the view in its canonical frame; the drawing is turned back by the target's
        # (D4, or a stored target) or by the query view's own pose frame (o2 and a view target)
        back = obj.model.frame(q_view if frame == "o2" and target == "view" else drawn)
        recon = obj.model.decode(obj.model.encoder(obj.model.canonicalize(q_view)), back)
        expected = (recon - drawn).pow(2).mean()
    assert torch.allclose(out["loss_recon"], expected, atol=1e-5)
