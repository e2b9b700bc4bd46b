"""DESaccess credentials: from the environment or ``~/.netrc``, never from the command line.

The password is held in an object whose ``repr``/``str`` hide it, so it cannot leak into a log line,
a traceback's locals summary or an error message by accident.
"""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from galmoco.errors import GalmocoError

__all__ = ["Credentials", "get_credentials", "USER_ENV", "PASSWORD_ENV"]

USER_ENV = "DESACCESS_USER"
PASSWORD_ENV = "DESACCESS_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    """A DES account. ``password`` is excluded from ``repr``."""

    username: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"Credentials(username={self.username!r})"


def get_credentials(api_url: str) -> Credentials:
    """Find the DES account to log in with.

    Looks at ``DESACCESS_USER``/``DESACCESS_PASSWORD`` first, then the ``machine`` entry for the API
    host in ``$NETRC`` or ``~/.netrc``.

    Args:
        api_url: the DESaccess API base URL (its host selects the netrc entry).

    Returns:
        The credentials.

    Raises:
        GalmocoError: when neither source has them (the message says where to put them).
    """
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if user and password:
        return Credentials(user, password)
    host = urlsplit(api_url).hostname or ""
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if path.is_file():
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError) as exc:
            # the parse error quotes the offending line, which may hold the password: do not repeat it
            raise GalmocoError(f"{path}: cannot parse (line {getattr(exc, 'lineno', '?')})") from None
        if entry and entry[0] and entry[2]:
            return Credentials(entry[0], entry[2])
    raise GalmocoError(
        f"DESaccess needs a DES account: set {USER_ENV} and {PASSWORD_ENV}, or add "
        f"'machine {host} login USER password PASS' to {path}"
    )
