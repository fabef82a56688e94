"""PyTorch feeding: ``kpcompile.torch.KeypointDataset`` (needs ``pip install torch``).

PyTorch is not a dependency of kpcompile: it is imported when ``KeypointDataset``
(or ``split_of``) is first used, with a clear error when it is not installed.

Example:
    >>> from torch.utils.data import DataLoader  # doctest: +SKIP
    >>> from kpcompile.torch import KeypointDataset  # doctest: +SKIP
    >>> ds = KeypointDataset("compiled", shuffle=True, split="train")  # doctest: +SKIP
    >>> for batch in DataLoader(ds, batch_size=None, num_workers=2): ...  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kpcompile.feeding.dataset import SPLIT_BY, SPLITS, KeypointDataset, scene_of, split_of

__all__ = ["SPLITS", "SPLIT_BY", "KeypointDataset", "scene_of", "split_of"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        msg = f"module 'kpcompile.torch' has no attribute {name!r}"
        raise AttributeError(msg)
    try:
        import torch  # noqa: F401
    except ImportError:
        msg = f"kpcompile.torch.{name} needs PyTorch, which is not installed: pip install torch"
        raise ImportError(msg) from None
    return getattr(importlib.import_module("kpcompile.feeding.dataset"), name)
