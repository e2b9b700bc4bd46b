"""The values a training option may take: one list per choice option of :class:`~galmoco.config.TrainConfig`.

One home for each list, so the config's validation and the ``train`` command's ``click.Choice`` options
cannot disagree. :mod:`galmoco.config` re-exports them.
"""

from __future__ import annotations

__all__ = ["ARCHS", "FRAMES", "HEADS", "KEY_BN_BUFFERS", "OBJECTIVES", "OPTIMIZERS", "RECON_TARGETS",
           "SIMILARITIES", "one_of"]

#: training objectives: reconstruction only, contrastive only, the two combined, and the memory-bank
#: objectives of the CMC code base (instance discrimination, contrastive multiview coding)
OBJECTIVES: tuple[str, ...] = ("ae", "moco", "moco-ae", "insdis", "cmc")
#: encoder architectures (``model.arch``)
ARCHS: tuple[str, ...] = ("conv", "resnet18", "resnet50")
#: projection heads (``model.head``): MoCo v1's linear layer, v2's MLP, or none (InfoNCE on the
#: normalised latent, the space placement reads)
HEADS: tuple[str, ...] = ("linear", "mlp", "identity")
#: frames the encoder reads stamps in (``model.frame``): the discrete D4 frame, the continuous pose
#: frame, none
FRAMES: tuple[str, ...] = ("d4", "o2", "none")
#: optimisers (``optim.optimizer``)
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
#: what the moco-ae decoder draws (``recon_target``)
RECON_TARGETS: tuple[str, ...] = ("view", "stored")
#: how the key encoder's BN buffers follow the query encoder (``moco.key_bn_buffers``)
KEY_BN_BUFFERS: tuple[str, ...] = ("own", "momentum")
#: how InfoNCE scores a query against a key (``moco.similarity``): their dot product (cosine of the
#: L2-normalised vectors, MoCo's), or minus their L1 distance (the distance placement ranks by)
SIMILARITIES: tuple[str, ...] = ("cosine", "l1")


def one_of(values: tuple[str, ...]) -> str:
    """What a validation message expects of a choice option.

    Args:
        values: the option's allowed values.

    Returns:
        ``"one of a, b, c"``.
    """
    return f"one of {', '.join(values)}"
