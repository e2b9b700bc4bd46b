"""The exception users see.

Library code raises :class:`GalmocoError` (or a subclass) for anything caused by the user's input or
environment: a bad file, a bad option value, a service that refused. The CLI prints its message as one
line and exits with status 1; a traceback is shown only with ``galmoco --verbose``. Messages name the
file, row or option and say what is wrong.
"""

__all__ = ["GalmocoError"]


class GalmocoError(Exception):
    """An error caused by input or environment, reported to the user as one line."""
