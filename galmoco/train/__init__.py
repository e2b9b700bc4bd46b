"""Training: the loop (one device or many), its parts, objectives, checkpoints, the run folder and the
kNN monitor.

- :mod:`galmoco.train.loop`: :func:`train`, one process or one of many under torchrun;
- :mod:`galmoco.train.build`: the data split and the model/objective/optimiser of a run;
- :mod:`galmoco.train.objectives`: ``ae``, ``moco``, ``moco-ae``, ``insdis``, ``cmc``;
- :mod:`galmoco.train.checkpoint`: writing and loading checkpoints, :func:`load_model`;
- :mod:`galmoco.train.run_folder`: the run folder's lock, ``provenance.json`` and ``metrics.csv``;
- :mod:`galmoco.train.monitor`, :mod:`galmoco.train.knn`: the end-of-epoch kNN accuracy and images.
"""

from galmoco.train.checkpoint import load_checkpoint, load_model
from galmoco.train.loop import RunResult, train

__all__ = ["RunResult", "load_checkpoint", "load_model", "train"]
