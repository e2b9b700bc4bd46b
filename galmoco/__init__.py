"""galmoco: momentum-contrast regularised autoencoders for galaxy images.

The pipeline is ``fetch -> io (pack) -> data -> models/train -> embed -> analysis``;
each stage is a library module and a ``galmoco`` command. The Python API (:mod:`galmoco.api`):

- :func:`load` a trained run; :class:`TrainedModel` ``.embed`` / ``.reconstruct`` / ``.neighbours``;
- :class:`DataContract`: what a model was trained on, checked on every call;
- :func:`build_index`, :class:`Index`, :func:`neighbour_table`: similarity search (``galmoco[search]``);
- :func:`search`, :func:`search_ids`, :func:`search_radec`, :func:`search_vectors`.

All names are imported here (tab completion sees them); torch, astropy and faiss load on first use.
"""

__version__ = "0.1.0"

from galmoco.api import TrainedModel, load  # noqa: E402
from galmoco.contract import DataContract  # noqa: E402
from galmoco.errors import GalmocoError  # noqa: E402
from galmoco.similarity.index import Index, build_index, neighbour_table  # noqa: E402
from galmoco.similarity.query import search, search_ids, search_radec, search_vectors  # noqa: E402

__all__ = ["DataContract", "GalmocoError", "Index", "TrainedModel", "__version__", "build_index", "load",
           "neighbour_table", "search", "search_ids", "search_radec", "search_vectors"]
