"""Feeding models: whole landmark files as arrays, read a row group at a time.

:mod:`~kpcompile.feeding.rowgroups` reads a snapshot's row groups as ``(files, 468)``
arrays without sorting; :mod:`~kpcompile.feeding.tensors` turns them into
``(N, 468, 3)`` and ``(N, 468, 2)`` tensors (:func:`kpcompile.tensors`); and
:mod:`~kpcompile.feeding.dataset` is the PyTorch ``IterableDataset``
(:mod:`kpcompile.torch`).
"""
