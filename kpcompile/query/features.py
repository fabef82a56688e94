"""Face features for feature pipelines: head pose, aligned landmarks, eye and mouth openness.

One row per (datapoint, camera), computed from the file's 468 ``global_3d``
landmarks with numpy over all files at once: the landmarks are read as one
``(N, 468, 3)`` tensor (:func:`kpcompile.tensors`, straight from the Parquet row
groups for a whole snapshot), and every file is fitted to MediaPipe's canonical
face (:data:`kpcompile.query.landmarks.CANONICAL_FACE`) by a least-squares
similarity (Umeyama's method: the Kabsch rotation plus a scale). Each file's
cross-covariance with the canonical face and its centroid come out of one
``(N, 1404) @ (1404, 12)`` GEMM for the whole batch; then, in threads of 2,048
files, batched 3 x 3 SVDs, one batched product for the aligned landmarks, and the
distances. No Python loop runs over files.

Coordinates and conventions
---------------------------
``global_3d`` is the exports' world frame, as Datagen's Faces exports and
:mod:`kpcompile.synth` write it: metres, ``+z`` up, and a head at rest (zero
pose) looks towards ``-y`` with its left (the subject's left) towards ``+x``.
The canonical face is in centimetres with ``+x`` the subject's left, ``+y`` up
and ``+z`` out of the face; at rest its axes map to world ``+x``, ``+z`` and
``-y``.

The head pose is the rotation ``R`` taking the head at rest to the head as seen,
in world axes, written as intrinsic Tait-Bryan angles z-x'-y''::

    R = Rz(yaw) @ Rx(pitch) @ Ry(roll)

first ``yaw`` about the vertical axis (world ``z``), then ``pitch`` about the
head's left-right axis as yaw left it, then ``roll`` about the head's back-front
axis as yaw and pitch left it. Angles are in degrees, right-handed:

* ``yaw`` > 0: the subject turns to their left (the face towards ``+x``);
  in ``(-180, 180]``;
* ``pitch`` > 0: the chin goes down (the face looks down); in ``[-90, 90]``;
* ``roll`` > 0: the top of the head tilts towards the subject's left shoulder;
  in ``(-180, 180]``.

Exports whose world frame differs (in-cabin exports use the car's frame, in
which drivers look towards ``+y``: yaw near 180) give the pose in their frame.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from kpcompile.errors import QueryError
from kpcompile.feeding import rowgroups as rg
from kpcompile.feeding.tensors import Tensors, tensors
from kpcompile.query.landmarks import CANONICAL_FACE, INTER_OCULAR
from kpcompile.query.scan import Out
from kpcompile.schema import NUM_LANDMARKS

Floats = npt.NDArray[np.floating[Any]]
F64 = npt.NDArray[np.float64]

CANONICAL: F64 = np.asarray(CANONICAL_FACE, dtype=np.float64)
"""``(468, 3)`` MediaPipe's canonical face, centimetres."""
_CENTRE = CANONICAL.mean(axis=0)
_CENTRED = CANONICAL - _CENTRE
_SPREAD = float((_CENTRED**2).sum())

WORLD_FROM_CANONICAL: F64 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Axes of the canonical face in the world frame of a head at rest (columns: x, y, z)."""

# MediaPipe's eyelid and lip landmarks: (upper, lower) lid or lip, (corner, corner).
# Right and left are the subject's.
RIGHT_EYE: tuple[tuple[int, int], tuple[int, int]] = ((159, 145), (33, 133))
LEFT_EYE: tuple[tuple[int, int], tuple[int, int]] = ((386, 374), (362, 263))
MOUTH: tuple[tuple[int, int], tuple[int, int]] = ((13, 14), (78, 308))

COLUMNS: tuple[str, ...] = (
    "yaw",
    "pitch",
    "roll",
    "scale",
    "tx",
    "ty",
    "tz",
    "fit_rms",
    "inter_ocular",
    "right_eye_openness",
    "left_eye_openness",
    "mouth_openness",
)
"""Float64 feature columns, after ``datapoint`` and ``camera`` (``aligned`` last)."""

_CHUNK = 2048  # files per step (11 MB of float32 landmarks), one per thread at a time


def features(
    frame: pl.LazyFrame | pl.DataFrame | Out | Tensors,
    *,
    aligned: bool = True,
    dtype: Any = "float32",
) -> pl.DataFrame:
    """Head pose, aligned landmarks and openness of every file, one row per (datapoint, camera).

    Axes, units and the yaw/pitch/roll convention are in the module docstring
    (:mod:`kpcompile.query.features`): intrinsic z-x'-y'' angles in degrees, yaw
    about the vertical axis, positive when the subject turns to their left; pitch
    positive chin down; roll positive towards the left shoulder.

    Columns, sorted by ``datapoint``, ``camera``:

    * ``yaw``, ``pitch``, ``roll``: head pose, degrees (Float64);
    * ``scale``: world units per canonical centimetre (0.01 for a canonical-sized
      head in metres); ``tx``, ``ty``, ``tz``: where the canonical origin lands,
      world units. So ``xyz ≈ scale * CANONICAL @ R_fit.T + t``, with
      ``R_fit = R @ WORLD_FROM_CANONICAL``;
    * ``fit_rms``: root-mean-square distance of the aligned landmarks from the
      canonical face, centimetres (0.5 to 0.7 for the real samples, whose faces
      differ from the canonical one; far more for a file that is not a face mesh);
    * ``inter_ocular``: distance of landmarks 33 and 263, world units;
    * ``right_eye_openness`` (159-145 over 33-133), ``left_eye_openness``
      (386-374 over 362-263), ``mouth_openness`` (13-14 over 78-308): the lid or
      lip gap over the eye or mouth width, in 3D, so free of pose and scale;
    * ``aligned`` (with ``aligned=True``): the 468 landmarks with scale, rotation
      and translation removed, in the canonical face's frame and centimetres, a
      ``pl.Array(dtype, (468, 3))`` column: ``df["aligned"].to_numpy()`` is the
      ``(N, 468, 3)`` tensor in the frame's row order (no copy), and it follows the
      rows through ``filter``, ``join`` or ``sort``.

    Args:
        frame: A keypoints frame of whole files (all 468 ids), an output folder
            (its current snapshot), or :class:`kpcompile.Tensors` of whole files.
        aligned: Include the ``aligned`` column.
        dtype: ``float32`` (default) or ``float64``: how the landmarks are read
            and the ``aligned`` column's type; the fit is done in float64 either way.

    Raises:
        QueryError: Files that are not whole (every file needs ids 0..467) or an
            invalid ``dtype``.

    Example:
        >>> f = kpcompile.features("compiled")  # doctest: +SKIP
        >>> f.select("datapoint", "yaw", "pitch", "roll", "left_eye_openness")  # doctest: +SKIP
        >>> x = f["aligned"].to_numpy()  # (N, 468, 3), canonical frame, cm  # doctest: +SKIP
    """
    dt = rg.check_dtype(dtype)
    t = frame if isinstance(frame, Tensors) else tensors(frame, dtype=dt)
    if len(t) and not np.array_equal(t.ids, np.arange(NUM_LANDMARKS)):
        msg = (
            f"features need whole files (landmark ids 0..{NUM_LANDMARKS - 1}); "
            f"these files hold {t.ids.size} ids: do not filter landmarks before features"
        )
        raise QueryError(msg)
    values, shapes = face_features(t.xyz.astype(dt, copy=False) if len(t) else _none(dt))
    df = t.index.with_columns(pl.Series(c, values[c]) for c in COLUMNS)
    if aligned:
        df = df.with_columns(pl.Series("aligned", shapes, dtype=pl.Array(_pl(dt), (468, 3))))
    return df


def _none(dtype: np.dtype[Any]) -> Floats:
    return np.empty((0, NUM_LANDMARKS, 3), dtype)


def _pl(dtype: np.dtype[Any]) -> type[pl.DataType]:
    return pl.Float32 if dtype == np.float32 else pl.Float64


def face_features(xyz: Floats) -> tuple[dict[str, F64], Floats]:
    """The feature columns of ``(N, 468, 3)`` landmarks, and their aligned landmarks.

    The numpy core of :func:`features`, for arrays already in memory: returns
    ``{column: (N,) float64}`` for every name in :data:`COLUMNS`, and the
    ``(N, 468, 3)`` aligned landmarks in ``xyz``'s dtype. Files holding a
    non-finite coordinate get NaN everywhere.

    Example:
        >>> values, aligned = face_features(kpcompile.tensors("compiled").xyz)  # doctest: +SKIP
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 3 or xyz.shape[1:] != (NUM_LANDMARKS, 3):
        msg = f"landmarks must have shape (N, {NUM_LANDMARKS}, 3); got {xyz.shape}"
        raise QueryError(msg)
    if xyz.dtype not in _FLAT:
        xyz = xyz.astype(np.float64)
    n = xyz.shape[0]
    out = {c: np.empty(n, np.float64) for c in COLUMNS}
    shapes = np.empty_like(xyz)
    # One GEMM for every file (BLAS threads it), then chunks in threads: numpy lets go
    # of the GIL in the SVDs, the small products and the ufuncs. (GEMMs inside the
    # threads would run BLAS's threads against them: half the speed on 2 cores.)
    with np.errstate(invalid="ignore"):  # a file with inf or NaN gets NaN, said above
        moments = _moments_of(xyz)

    def step(start: int) -> None:
        part = slice(start, min(n, start + _CHUNK))
        cols = {c: v[part] for c, v in out.items()}
        with np.errstate(invalid="ignore"):  # again: numpy's error state is per thread
            _chunk(xyz[part], moments[part], cols, shapes[part])

    starts = range(0, n, _CHUNK)
    if len(starts) < 2:
        for start in starts:
            step(start)
    else:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(step, starts))
    return out, shapes


def _chunk(xyz: Floats, moments: F64, out: dict[str, F64], shapes: Floats) -> None:
    """Fill ``out`` (views of the columns) and ``shapes`` for one chunk of files."""
    rot, scale, shift = _solve(moments)
    # aligned = (x - t) @ R / s: one batched product and a per-file offset
    inv = (rot / scale[:, None, None]).astype(xyz.dtype)
    np.matmul(xyz, inv, out=shapes)
    shapes -= (shift[:, None, :] @ inv).astype(xyz.dtype)
    # over flat rows: a reduction over an axis of 3 is several times slower
    diff = shapes.reshape(len(shapes), -1) - _FLAT[shapes.dtype]
    out["fit_rms"][:] = np.sqrt(np.einsum("ij,ij->i", diff, diff) / NUM_LANDMARKS)
    angles = np.degrees(pose_angles(rot @ WORLD_FROM_CANONICAL.T))
    for i, name in enumerate(("yaw", "pitch", "roll")):
        out[name][:] = angles[:, i]
    out["scale"][:] = scale
    for i, name in enumerate(("tx", "ty", "tz")):
        out[name][:] = shift[:, i]
    a, b = INTER_OCULAR
    out["inter_ocular"][:] = _distance(xyz, a, b)
    for name, ((up, down), (c1, c2)) in (
        ("right_eye_openness", RIGHT_EYE),
        ("left_eye_openness", LEFT_EYE),
        ("mouth_openness", MOUTH),
    ):
        out[name][:] = _distance(xyz, up, down) / _distance(xyz, c1, c2)


def _distance(xyz: Floats, a: int, b: int) -> F64:
    d: F64 = xyz[:, a].astype(np.float64) - xyz[:, b]
    out: F64 = np.sqrt((d * d).sum(axis=-1))
    return out


def _moments(dtype: np.dtype[Any]) -> Floats:
    """``(1404, 12)``: a flat file times it gives its cross-covariance and centroid.

    Column ``3 i + j`` sums ``x[k, i] * centred[k, j]`` over landmarks ``k`` (the
    canonical face is centred, so the file need not be); columns 9..11 average
    ``x[:, i]``.
    """
    m = np.zeros((NUM_LANDMARKS * 3, 12), dtype)
    for i in range(3):
        m[i::3, 3 * i : 3 * i + 3] = _CENTRED
        m[i::3, 9 + i] = 1.0 / NUM_LANDMARKS
    return m


_MOMENTS = {np.dtype(d): _moments(np.dtype(d)) for d in rg.DTYPES}
_FLAT = {np.dtype(d): CANONICAL.astype(d).ravel() for d in rg.DTYPES}


def fit(xyz: Floats) -> tuple[F64, F64, F64]:
    """Least-squares similarity of the canonical face onto each file (Umeyama, 1991).

    Returns ``(rot, scale, shift)``, ``(N, 3, 3)``, ``(N,)`` and ``(N, 3)`` float64,
    minimising ``sum |xyz[n, k] - scale[n] * rot[n] @ CANONICAL[k] - shift[n]|^2``
    with ``rot`` a proper rotation. Files with a non-finite coordinate get NaN.

    Example:
        >>> rot, scale, shift = fit(kpcompile.tensors("compiled").xyz)  # doctest: +SKIP
    """
    return _solve(_moments_of(xyz))


def _moments_of(xyz: Floats) -> F64:
    """``(N, 12)`` float64: each file's cross-covariance (9) and centroid (3), one GEMM."""
    n = xyz.shape[0]
    m = _MOMENTS.get(xyz.dtype)
    flat = xyz.reshape(n, NUM_LANDMARKS * 3)
    if m is None:
        m, flat = _MOMENTS[np.dtype(np.float64)], flat.astype(np.float64)
    moments: F64 = (flat @ m).astype(np.float64, copy=False)
    return moments


def _solve(moments: F64) -> tuple[F64, F64, F64]:
    """:func:`fit` from the moments: rotation, scale, shift."""
    n = moments.shape[0]
    cov, centroid = moments[:, :9].reshape(n, 3, 3), moments[:, 9:]
    ok = np.isfinite(moments).all(axis=1)
    if ok.all():
        rot, trace = _kabsch(cov)
    else:
        rot, trace = np.full((n, 3, 3), np.nan), np.full(n, np.nan)
        if ok.any():
            rot[ok], trace[ok] = _kabsch(cov[ok])
    scale = trace / _SPREAD
    shift = centroid - scale[:, None] * (rot @ _CENTRE)
    return rot, scale, shift


def _kabsch(cov: F64) -> tuple[F64, F64]:
    """The rotations of ``(N, 3, 3)`` cross-covariances, and the traces giving the scale."""
    u, d, vt = np.linalg.svd(cov)
    # a reflection would fit better only by mirroring the face: flip the weakest axis
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    sign[sign == 0] = 1.0
    u[:, :, 2] *= sign[:, None]
    rot: F64 = u @ vt
    trace: F64 = d[:, 0] + d[:, 1] + sign * d[:, 2]
    return rot, trace


def pose_angles(rot: F64) -> F64:
    """``(N, 3)`` yaw, pitch, roll in radians of ``(N, 3, 3)`` rotations ``Rz @ Rx @ Ry``.

    Example:
        >>> pose_angles(np.eye(3)[None]).tolist()
        [[0.0, 0.0, 0.0]]
    """
    # Rz(y) Rx(p) Ry(r) = [[., -sy cp, .], [., cy cp, .], [-cp sr, sp, cp cr]]
    yaw = np.arctan2(-rot[:, 0, 1], rot[:, 1, 1])
    pitch = np.arcsin(np.clip(rot[:, 2, 1], -1.0, 1.0))
    roll = np.arctan2(-rot[:, 2, 0], rot[:, 2, 2])
    return np.stack([yaw, pitch, roll], axis=-1) + 0.0  # + 0.0: no negative zeros


def rotation(yaw: float, pitch: float, roll: float) -> F64:
    """The ``(3, 3)`` rotation ``Rz(yaw) @ Rx(pitch) @ Ry(roll)`` of angles in degrees.

    Example:
        >>> bool(np.allclose(rotation(90, 0, 0) @ [0, -1, 0], [1, 0, 0]))  # face turns to +x
        True
    """
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    cy, sy, cp, sp, cr, sr = (
        math.cos(y),
        math.sin(y),
        math.cos(p),
        math.sin(p),
        math.cos(r),
        math.sin(r),
    )
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    ry = np.array([[cr, 0.0, sr], [0.0, 1.0, 0.0], [-sr, 0.0, cr]])
    out: F64 = rz @ rx @ ry
    return out
