"""The store, the fourth stage: publish snapshots, keep their history, verify and retire them.

:func:`open_store` is the one place that looks at what OUT is (a local folder or
a URL) and returns the matching :class:`Store`.
"""

from __future__ import annotations

import os

from kpcompile.store.base import Store
from kpcompile.store.local import LocalStore
from kpcompile.store.objstore import ObjectStore

__all__ = ["Store", "open_store"]


def open_store(out: str | os.PathLike[str] | Store) -> Store:
    """The store of an output folder or URL (``s3://bucket/compiled``); a Store is returned as is.

    Example:
        >>> open_store("compiled").location
        'compiled'
    """
    if isinstance(out, Store):
        return out
    location = os.fspath(out)
    return ObjectStore(location) if "://" in location else LocalStore(location)
