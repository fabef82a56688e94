"""Query, the last stage: read snapshots with polars, SQL, tensors and pictures.

:mod:`~kpcompile.query.scan` (``scan``, ``read``, ``sql``), query results as
tables and files (:mod:`~kpcompile.query.results`), analytics over
landmarks (:mod:`~kpcompile.query.analytics`), camera projection
(:mod:`~kpcompile.query.projection`), pictures (:mod:`~kpcompile.query.plot`) and
the MediaPipe landmark metadata (:mod:`~kpcompile.query.landmarks`). Tensors and the
PyTorch dataset are in :mod:`kpcompile.feeding`, the HTML report in
:mod:`kpcompile.reporting`. Nothing here is imported by a build: this package imports
polars.
"""
