"""Keys of cached products: a small JSON file beside a product records the inputs it was computed from.

``<product>.key.json`` holds a dict of the inputs (digests of files, options); a cached product is
reused only when its key equals the key of the inputs at hand (:func:`is_current`), and recomputed
otherwise. Written atomically (:func:`galmoco.files.atomic_write_text`) after the product itself, so a
product is never keyed before it is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from galmoco.files import atomic_write_text

__all__ = ["file_sha256", "is_current", "key_path", "keyed_output", "write_key"]


def key_path(product: str | os.PathLike) -> Path:
    """``<product>.key.json``, the key file of ``product``."""
    product = Path(product)
    return product.with_name(product.name + ".key.json")


def _normalised(key: dict[str, Any]) -> Any:
    """``key`` as it reads back from JSON (tuples become lists), so keys compare equal after a round trip."""
    return json.loads(json.dumps(key, sort_keys=True))


def is_current(product: str | os.PathLike, key: dict[str, Any]) -> bool:
    """Whether ``product`` exists and its key file records exactly ``key``."""
    try:
        return Path(product).is_file() and json.loads(key_path(product).read_text()) == _normalised(key)
    except (OSError, ValueError):
        return False


def write_key(product: str | os.PathLike, key: dict[str, Any]) -> Path:
    """Record ``key`` (JSON-serialisable) as the inputs of ``product``; returns the key file."""
    return atomic_write_text(key_path(product), json.dumps(_normalised(key), indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def keyed_output(product: str | os.PathLike, key: dict[str, Any] | None) -> Iterator[None]:
    """Around (re)writing ``product`` from the inputs ``key``: the old key file is removed first, so a
    product interrupted while being rewritten is never taken for current; ``key`` (unless None) is
    recorded when the block succeeds."""
    key_path(product).unlink(missing_ok=True)
    yield
    if key is not None:
        write_key(product, key)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks), hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
