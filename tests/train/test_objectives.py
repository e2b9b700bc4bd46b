"""Objectives' mechanics on one batch, and the kNN monitor on constructed latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from galmoco.data.augment import GalaxyAugment
from galmoco.data.mixing import MixConfig, apply_mixing, sample_mixing
from galmoco.models import GalaxyModel
from galmoco.models.moco import SplitBatchNorm
from galmoco.train.knn import encode_labels, knn_accuracy, knn_predict
from galmoco.train.objectives import AEObjective, MocoAEObjective, build_objective

from .conftest import tiny_config


def _objective(objective: str, **model):
    cfg = tiny_config(objective=objective)
    cfg.mask.rule = "none"
    for key, value in model.items():  # the model's shape: set before the model copies it
        setattr(cfg.model, key, value)
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
    total = cfg.alpha * out["loss_contrastive"] + cfg.recon_weight() * out["loss_recon"]
    assert torch.isclose(out["loss"], total)
    assert int(obj.queue.ptr) == 32
    moved = [not torch.equal(a, b) for a, b in zip(key_before, obj.key_encoder.parameters(), strict=True)]
    assert any(moved)
    out["loss"].backward()
    # the default head is the identity (InfoNCE on the latent): the encoder's last layer, and the map of
    # its aperture photometry, get the gradient
    encoder = obj.model.encoder
    assert obj.model.decoder.fc.weight.grad is not None and encoder.encoder.fc.weight.grad is not None
    assert encoder.photometry.weight.grad is not None
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


@pytest.mark.parametrize("frame", ["d4", "o2", "none/o2"])
@pytest.mark.parametrize("target", ["view", "stored"])
def test_moco_ae_reconstructs_what_the_query_view_shows(target, frame):
    """``none/o2``: the encoder reads the view as it is, the decoder draws in the pose frame."""
    encoder_frame, _, draw = frame.partition("/")
    obj = _objective("moco-ae", frame=encoder_frame, draw_frame=draw or None)
    assert obj.model.config.model.frame == encoder_frame
    obj.config.recon_target = target
    obj.eval()
    images = 5 * torch.rand(8, 4, 32, 32)
    draws = torch.Generator().manual_seed(3)
    obj.generator = torch.Generator().manual_seed(3)
    views, params = obj.augment.views(images, draws)  # the draws contrastive() makes
    q_params = type(params)(**{k: (v[:8] if v is not None else None) for k, v in vars(params).items()})
    seen = obj.augment.apply_geometry(images, q_params)
    assert not torch.equal(seen, images)  # the view really is moved
    out = obj({"image": images})
    with torch.no_grad():
        q_view = obj.model.normalize(views)[:8]
        drawn = obj.model.normalize(seen if target == "view" else images)
        # the encoder reads the view in its canonical frame; the drawing is turned back by the target's
        # (D4, or a stored target) or by the query view's own pose frame (o2 and a view target)
        back = obj.model.frame(q_view if frame.endswith("o2") and target == "view" else drawn)
        read = q_view if frame.startswith("none") else obj.model.canonicalize(q_view)
        recon = obj.model.decode(obj.model.encoder(read), back)
        expected = (recon - drawn).pow(2).mean()
    assert torch.allclose(out["loss_recon"], expected, atol=1e-5)


def _mixing_objective(objective: str, mix: MixConfig, **moco):
    cfg = tiny_config(objective=objective, mix=mix)
    cfg.mask.rule = "none"
    cfg.bank.k = 16
    for key, value in moco.items():
        setattr(cfg.moco, key, value)
    torch.manual_seed(0)
    model = GalaxyModel(cfg.validate(), "griz", 32, [1.0] * 4)
    augment = GalaxyAugment(cfg.augment, [1.0] * 4)
    return build_objective(model, augment, cfg, torch.Generator().manual_seed(0), queue_size=48,
                           train_idx=np.arange(40))


@pytest.mark.parametrize("objective", ["moco", "moco-ae", "insdis", "cmc"])
def test_mixing_with_probability_zero_is_bit_identical_to_the_plain_objective(objective):
    never = MixConfig(method="mixture", global_prob=0.0, region_prob=0.0)
    plain, mixing = _mixing_objective(objective, MixConfig()), _mixing_objective(objective, never)
    torch.manual_seed(1)
    batches = [{"image": 5 * torch.rand(16, 4, 32, 32), "index": torch.arange(16) + 16 * b} for b in range(2)]
    losses = []
    for step, batch in enumerate(batches):  # two steps: the queue / banks the first writes, the second reads
        torch.manual_seed(10 + step)  # the banks draw their negatives from the global generator
        a = plain(batch)
        torch.manual_seed(10 + step)
        b = mixing(batch)
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
        losses.append(a["loss"])
    mixed = _mixing_objective(objective, MixConfig(method="mixture", global_prob=1.0, region_prob=1.0))
    torch.manual_seed(10)
    loss = mixed(batches[0])["loss"]
    assert torch.isfinite(loss) and not torch.equal(loss, losses[0])


def _score(q: torch.Tensor, k: torch.Tensor, similarity: str) -> torch.Tensor:
    """One query against one key, written out: the dot product, or minus the L1 distance over sqrt(D)."""
    return q @ k if similarity == "cosine" else -(q - k).abs().sum() / q.numel() ** 0.5


@pytest.mark.parametrize(("similarity", "symmetric"), [("cosine", False), ("l1", False), ("cosine", True),
                                                       ("l1", True)])
def test_moco_loss_agrees_with_a_direct_computation(similarity, symmetric):
    obj = _mixing_objective("moco", MixConfig(), momentum=0.0, shuffle_bn=False, similarity=similarity,
                            symmetric=symmetric)
    obj.train()
    images = 5 * torch.rand(16, 4, 32, 32)
    queue = obj.queue.negatives().clone()
    obj.generator = torch.Generator().manual_seed(3)
    out = obj({"image": images})
    views = obj.augment.views(images, torch.Generator().manual_seed(3))[0]
    # momentum 0 and no BN shuffle: the key encoder is the query encoder, so a view's key is its query
    a, b = (obj.model.head(obj.model.encode_normalized(v)).detach()
            for v in obj.model.normalize(views).chunk(2))
    t = obj.config.moco.temperature

    def one_way(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return sum(F.cross_entropy(torch.stack([_score(q[i], key, similarity)
                                                for key in (k[i], *queue)])[None] / t, torch.tensor([0]))
                   for i in range(16)) / 16

    direct = (one_way(a, b) + one_way(b, a)) / 2 if symmetric else one_way(a, b)
    assert torch.allclose(out["loss_contrastive"], direct, atol=1e-5)
    # the queue takes the keys of the second views only: one key per galaxy and step either way
    assert torch.allclose(obj.queue.negatives()[:16], b, atol=1e-5)


@pytest.mark.parametrize(("objective", "similarity", "symmetric"),
                         [("moco", "cosine", False), ("moco-ae", "cosine", False), ("moco", "l1", False),
                          ("moco", "cosine", True), ("moco-ae", "l1", True)])
def test_mixed_batch_loss_agrees_with_a_direct_computation(objective, similarity, symmetric):
    # momentum 0 and no BN shuffle: the key encoder is the query encoder, so keys can be recomputed
    mix = MixConfig(method="global", global_count=1, global_prob=1.0)
    obj = _mixing_objective(objective, mix, momentum=0.0, shuffle_bn=False, similarity=similarity,
                            symmetric=symmetric)
    obj.train()
    images = 5 * torch.rand(16, 4, 32, 32)
    queue = obj.queue.negatives().clone()
    obj.generator = torch.Generator().manual_seed(4)
    out = obj({"image": images})
    draws = torch.Generator().manual_seed(4)  # the draws forward() made: both views, then the mixture
    views, params = obj.augment.views(images, draws)
    q_view, k_view = obj.model.normalize(views).chunk(2)
    mixing = sample_mixing(16, (32, 32), mix, "cpu", draws)
    mixed = apply_mixing(q_view, mixing)
    partner, lam = mixing.sources[:, 1], mixing.coefficients[:, 0, 0, 0]
    weight = lam[:, None, None, None]
    assert torch.allclose(mixed, weight * q_view + (1 - weight) * q_view[partner])
    assert (lam < 1).all()
    with torch.no_grad():
        latent = obj.model.encode_normalized(mixed)
        q, k = obj.model.head(latent), obj.model.head(obj.model.encode_normalized(k_view))
        t = obj.config.moco.temperature
        direct = 0.0
        for i in range(16):  # lam InfoNCE with its own key + (1 - lam) InfoNCE with the partner's
            for j, w in ((i, lam[i]), (int(partner[i]), 1 - lam[i])):
                logits = torch.stack([_score(q[i], key, similarity) for key in (k[j], *queue)]) / t
                direct = direct + w * F.cross_entropy(logits[None], torch.tensor([0]))
        direct = direct / 16
        if symmetric:  # the key view queries the unmixed query view's key; the same queue, no mixture
            reverse_q = obj.model.head(obj.model.encode_normalized(q_view))
            reverse = sum(F.cross_entropy(torch.stack([_score(k[i], key, similarity)
                                                       for key in (reverse_q[i], *queue)])[None] / t,
                                          torch.tensor([0])) for i in range(16)) / 16
            direct = (direct + reverse) / 2
    assert torch.allclose(out["loss_contrastive"], direct, atol=1e-5)
    if objective == "moco-ae":  # the decoder draws the same mixture of the view's geometry-only targets
        q_params = type(params)(**{k: (v[:16] if v is not None else None) for k, v in vars(params).items()})
        target = apply_mixing(obj.model.normalize(obj.augment.apply_geometry(images, q_params)), mixing)
        with torch.no_grad():
            # the pose frame the mixed query was read in turns the drawing back (the D4 frame: the target's)
            frame = obj.model.frame(mixed if obj.config.model.frame == "o2" else target)
            recon = obj.model.decode(latent, frame)
        assert torch.allclose(out["loss_recon"], (recon - target).pow(2).mean(), atol=1e-5)


def test_mixed_insdis_loss_agrees_with_a_direct_computation():
    mix = MixConfig(method="global", global_count=1, global_prob=1.0)
    obj = _mixing_objective("insdis", mix)
    obj.train()
    images, index = 5 * torch.rand(16, 4, 32, 32), torch.arange(16) + 8
    memory = obj.contrast.banks[0].memory.clone()
    obj.generator = torch.Generator().manual_seed(4)
    torch.manual_seed(9)  # the bank draws its negatives from the global generator
    out = obj({"image": images, "index": index})
    draws = torch.Generator().manual_seed(4)  # the draws forward() made: the view, then the mixture
    x = obj.model.normalize(obj.augment(images, generator=draws))
    mixing = sample_mixing(16, (32, 32), mix, "cpu", draws)
    partner, lam = mixing.sources[:, 1], mixing.coefficients[:, 0, 0, 0]
    torch.manual_seed(9)
    negatives = torch.randint(40, (16, obj.config.bank.k + 1))[:, 1:]
    with torch.no_grad():
        v = obj.model.head(obj.model.encode_normalized(apply_mixing(x, mixing)))
        t = obj.config.bank.temperature
        direct = 0.0
        for i in range(16):  # lam: the own bank entry is the positive; 1 - lam: the partner's
            for j, w in ((i, lam[i]), (int(partner[i]), 1 - lam[i])):
                logits = torch.cat([(v[i] @ memory[index[j]])[None], memory[negatives[i]] @ v[i]]) / t
                direct = direct + w * F.cross_entropy(logits[None], torch.tensor([0]))
        direct = direct / 16
    assert (lam < 1).all()
    assert torch.allclose(out["loss"], direct, atol=1e-5)


def _contrastive_loss(frame: str, temperature: float | None) -> float:
    cfg = tiny_config(objective="moco")
    cfg.mask.rule, cfg.model.frame, cfg.moco.temperature = "none", frame, temperature
    torch.manual_seed(0)
    model = GalaxyModel(cfg, "griz", 32, [1.0] * 4)
    obj = build_objective(model, GalaxyAugment(cfg.augment, [1.0] * 4), cfg, torch.Generator().manual_seed(0),
                          queue_size=48)
    obj.train()
    images = 5 * torch.rand(16, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    return float(obj({"image": images})["loss"].detach())


def test_infonce_uses_the_temperature_resolved_by_the_frame():
    unset = _contrastive_loss("none", None)  # without a frame: 0.1
    assert unset == pytest.approx(_contrastive_loss("none", 0.1), rel=1e-6)
    assert abs(unset - _contrastive_loss("none", 0.2)) > 0.1
