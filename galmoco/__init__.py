"""galmoco: momentum-contrast regularised autoencoders for galaxy images.

The pipeline is ``fetch -> io (pack) -> data -> models/train -> embed -> analysis``;
each stage is a library module and a ``galmoco`` command.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
