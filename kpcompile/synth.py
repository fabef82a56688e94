"""Synthesize realistic Datagen-style datasets in every known layout.

Faces come from MediaPipe's canonical face (``landmarks.CANONICAL_FACE``), posed
at random per datapoint and seen by cameras on a ring around the head. Values are
what real exports hold: float32 world coordinates written as float64, pixel
coordinates projected through the camera (``pixel_2d.x`` is the image row and
``pixel_2d.y`` the column, as in real exports), visibility from the landmark's
facing. Camera metadata is written as each export writes it: the Faces matrices
reproduce the pixels; the in-cabin ones do not, only the camera's rotation and
location with square pixels do (the report's ``pose`` model). Files are written
3-space indented like the real exports, by templates that produce exactly what
``json.dumps(doc, indent=3)`` would, only faster.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kpcompile.errors import OptionsError, OutputError
from kpcompile.query.landmarks import CANONICAL_FACE

SYNTH_LAYOUTS: tuple[str, ...] = ("faces", "in_cabin", "legacy", "documented", "mixed")
IN_CABIN_CAMERAS = (
    "media_dashboard_camera",
    "media_rear_mirror_camera",
    "media_center_console_camera",
    "media_a_pillar_camera",
)
FRAMES_PER_SCENE = 10
_CANON = np.asarray(CANONICAL_FACE, dtype=np.float64)
# canonical (cm; +x subject's left, +y up, +z out of the face) -> world (m; z up,
# subject looking towards -y), as in the Faces exports.
_TO_WORLD = np.array([[0.01, 0, 0], [0, 0, -0.01], [0, 0.01, 0]])
_HEAD_CENTRE = np.array([0.0, 0.0, -6.0])  # behind the face, in canonical cm
_STANDARD_68 = tuple(int(i) for i in np.linspace(0, 467, 68).round())

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SynthResult:
    """What :func:`synth` wrote: landmark files, all files, bytes."""

    landmark_files: int
    files: int
    bytes: int
    root: str = ""


@dataclass(frozen=True, slots=True)
class _View:
    x3: Array
    y3: Array
    z3: Array
    row: Array
    col: Array
    visible: npt.NDArray[np.bool_]
    metadata: dict[str, Any]


def synth(
    out: str | os.PathLike[str],
    *,
    datapoints: int = 10,
    cameras: int = 1,
    layout: str = "faces",
    seed: int = 0,
    version: str | None = "2.0.0",
    extras: bool = True,
    overwrite: bool = False,
) -> SynthResult:
    """Write a synthetic dataset of ``datapoints`` x ``cameras`` landmark files.

    Args:
        out: Folder to write into (created; existing files are overwritten).
        datapoints: Datapoints (Faces, documented), frames (in-cabin, grouped in
            scenes of 10) or environments (legacy).
        cameras: Camera folders per datapoint.
        layout: One of ``faces``, ``in_cabin``, ``legacy``, ``documented``, or
            ``mixed`` (datapoints spread over the four, each in its own subfolder).
        seed: Same seed, same bytes.
        version: ``version`` field of the Faces, in-cabin and documented files;
            ``None`` writes none (as older Faces and in-cabin exports; the
            documented layout always has one). ``mixed`` writes in-cabin scenes
            with it (``in_cabin/``) and without it (``in_cabin_unversioned/``).
        extras: Also write the files real exports carry beside the landmarks
            (``all_key_points.json``, the 68-point set, ``camera_metadata.json``).
        overwrite: Replace what ``out`` holds when it is not empty (otherwise
            :class:`OutputError`: a dataset mixed with older files is a trap); only
            a dataset synth wrote: a folder holding any other file, or a kpcompile
            output, is refused (:data:`SYNTH_NAMES`).

    Example:
        >>> synth("dataset", datapoints=100, cameras=2)  # doctest: +SKIP
        SynthResult(landmark_files=200, files=..., bytes=...)
    """
    if layout not in SYNTH_LAYOUTS:
        msg = f"layout must be one of {', '.join(SYNTH_LAYOUTS)}; got {layout!r}"
        raise OptionsError(msg)
    if datapoints < 1 or cameras < 1:
        msg = f"datapoints and cameras must be at least 1; got {datapoints} and {cameras}"
        raise OptionsError(msg)
    root = Path(out)
    _make_room(root, overwrite)
    try:
        counts = _write_all(root, datapoints, cameras, layout, seed, version, extras)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        msg = f"cannot write the dataset in {os.fspath(out)!r}: {exc.strerror or exc}{where}"
        raise OutputError(msg) from None
    return SynthResult(counts[0], counts[1], counts[2], os.fspath(out))


def _write_all(
    root: Path,
    datapoints: int,
    cameras: int,
    layout: str,
    seed: int,
    version: str | None,
    extras: bool,
) -> list[int]:
    """Write every file; return (landmark files, files, bytes)."""
    counts = [0, 0, 0]
    for i, lay, folder, unversioned in _plan(datapoints, layout):
        rng = np.random.default_rng([seed, i])
        pose = _pose(rng)
        names = _camera_names(lay, cameras)
        for j, cam in enumerate(names):
            view = _view(pose, j, cameras, lay, rng)
            ver = None if unversioned else version
            for rel, text in _files(lay, view, cam, ver, extras):
                path = root / folder / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                data = text.encode()
                path.write_bytes(data)
                counts[1] += 1
                counts[2] += len(data)
            counts[0] += 1
    return counts


_MIXED = ("faces", "in_cabin", "legacy", "documented", "in_cabin_unversioned")


SYNTH_NAMES = frozenset(
    {
        "face_dense_key_points.json",
        "face_standard_key_points.json",
        "all_key_points.json",
        "head_key_points.json",
        "ears_key_points.json",
        "camera_metadata.json",
        "dense_keypoints.json",
        "standard_keypoints.json",
    }
)
"""Every file name synth writes: ``--overwrite`` replaces a folder holding only these."""


def _make_room(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        msg = f"{str(root)!r} is a file, not a folder"
        raise OutputError(msg)
    if not root.is_dir() or not any(root.iterdir()):
        return
    if not overwrite:
        msg = (
            f"{str(root)!r} is not empty; synth writes a whole dataset: "
            "choose a new folder, or give --overwrite to replace a dataset synth wrote"
        )
        raise OutputError(msg)
    foreign = _foreign(root)
    if foreign is not None:
        msg = (
            f"{str(root)!r} holds {foreign}, which synth did not write; --overwrite only "
            "replaces a dataset synth wrote: remove it yourself or choose a new folder"
        )
        raise OutputError(msg)
    shutil.rmtree(root)


def _foreign(root: Path) -> str | None:
    """Something under ``root`` that synth would not have written, or ``None``."""
    from kpcompile.store.base import OWN_NAMES

    for name in sorted(OWN_NAMES):
        if (root / name).exists():
            return f"{name!r} (it is a kpcompile output)"
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        for d in dirs:
            if (here / d).is_symlink():
                return repr((here / d).relative_to(root).as_posix())
        for n in names:
            p = here / n
            if n not in SYNTH_NAMES or p.is_symlink() or not p.is_file():
                return repr(p.relative_to(root).as_posix())
    return None


def _plan(n: int, layout: str) -> Iterator[tuple[int, str, str, bool]]:
    """(index, layout, folder, written without version) of each datapoint."""
    kinds = _MIXED if layout == "mixed" else (layout,)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        lay = kind.removesuffix("_unversioned")
        k = i // len(kinds)
        sub = f"{kind}/" if layout == "mixed" else ""
        if lay == "in_cabin":
            folder = (
                f"{sub}scene_{k // FRAMES_PER_SCENE + 1:05d}/frames/{k % FRAMES_PER_SCENE + 1:03d}"
            )
        elif lay == "legacy":
            folder = f"{sub}environment_{k + 1:05d}"
        else:
            folder = f"{sub}datapoint_{k + 1:05d}"
        yield i, lay, folder, kind != lay


def _camera_names(layout: str, n: int) -> list[str]:
    if layout == "in_cabin":
        names = list(IN_CABIN_CAMERAS[:n])
        return names + [f"media_camera_{j:02d}" for j in range(len(names), n)]
    return ["camera"] if n == 1 else [f"camera_{j:02d}" for j in range(n)]


def _rotation(yaw: float, pitch: float, roll: float) -> Array:
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cr, 0, sr], [0, 1, 0], [-sr, 0, cr]])
    rot: Array = rz @ rx @ ry
    return rot


def _pose(rng: np.random.Generator) -> tuple[Array, Array]:
    """World landmarks (float32 precision) and world head centre of one datapoint."""
    rot = _rotation(*np.radians(rng.uniform([-25, -12, -8], [25, 12, 8])))
    scale = rng.uniform(0.92, 1.08)
    shift = rng.normal([0.0, 0.0, 0.1], 0.01)
    expr = rng.normal(0.0, 0.04, _CANON.shape)  # small per-landmark identity/expression
    pts = ((_CANON + expr) * scale) @ _TO_WORLD.T @ rot.T + shift
    centre = (_HEAD_CENTRE * scale) @ _TO_WORLD.T @ rot.T + shift
    return pts.astype(np.float32).astype(np.float64), centre


def _view(
    pose: tuple[Array, Array], j: int, n: int, layout: str, rng: np.random.Generator
) -> _View:
    pts, centre = pose
    if layout == "in_cabin":
        res, f, dist = (506.0, 283.0), 486.0, 0.9
    else:
        res, f, dist = (1024.0, 1024.0), 5852.19, 1.6
    az = math.radians(0.0 if n == 1 else -40.0 + 80.0 * j / (n - 1))
    el = math.radians(rng.uniform(-3.0, 6.0))
    target = np.array([0.0, 0.0, 0.1])
    loc = target + dist * np.array(
        [math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)]
    )
    fwd = (target - loc) / np.linalg.norm(target - loc)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])
    ext = np.c_[rot, -rot @ loc]
    k = np.array([[f, 0.0, res[0] / 2], [0.0, f, res[1] / 2], [0.0, 0.0, 1.0]])
    cam = (ext @ np.c_[pts, np.ones(len(pts))].T).T
    uvw = (k @ cam.T).T
    if layout == "in_cabin":
        # The real in-cabin exports project with these (square pixels, t = -R @ location:
        # the report's `pose` model) but write fy = fx * width / height and t = -R.T @
        # location in camera_metadata.json, which do not reproduce their own pixels.
        k = k.copy()
        k[1, 1] = f * res[0] / res[1]
        ext = np.c_[rot, -rot.T @ loc]
    col, row = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
    normal = pts - centre
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    to_cam = loc - pts
    to_cam /= np.linalg.norm(to_cam, axis=1, keepdims=True)
    visible = (normal * to_cam).sum(axis=1) > 0.2
    meta = {
        "camera_type": "PERSP",
        "location": dict(zip("xyz", map(float, loc), strict=True)),
        "resolution_px": {"x": res[0], "y": res[1]},
        "intrinsic_matrix": k.tolist(),
        "extrinsic_matrix": ext.tolist(),
    }
    return _View(pts[:, 0], pts[:, 1], pts[:, 2], row, col, visible, meta)


# ------------------------------------------------------------------ file writers

_I = "   "


def _floats(a: Array) -> list[str]:
    return [repr(float(v)) for v in a]


def _ints(a: Array) -> list[str]:
    return [str(int(v)) for v in np.rint(a)]


def _object_landmarks(view: _View, pixels: str, vis: str | None, depth: int) -> str:
    """``"i": {"global_3d": ..., "pixel_2d": ..., "is_visible": ...}`` entries."""
    p = _I * depth
    x3, y3, z3 = _floats(view.x3), _floats(view.y3), _floats(view.z3)
    conv = _floats if pixels == "float" else _ints
    px, py = conv(view.row), conv(view.col)
    if vis == "string":
        flags = ['"true"' if v else '"false"' for v in view.visible]
    elif vis == "bool":
        flags = ["true" if v else "false" for v in view.visible]
    entries = []
    for i in range(len(x3)):
        tail = f',\n{p}{_I}"is_visible": {flags[i]}' if vis else ""
        entries.append(
            f'{p}"{i}": {{\n'
            f'{p}{_I}"global_3d": {{\n'
            f'{p}{_I}{_I}"x": {x3[i]},\n{p}{_I}{_I}"y": {y3[i]},\n{p}{_I}{_I}"z": {z3[i]}\n'
            f"{p}{_I}}},\n"
            f'{p}{_I}"pixel_2d": {{\n'
            f'{p}{_I}{_I}"x": {px[i]},\n{p}{_I}{_I}"y": {py[i]}\n'
            f"{p}{_I}}}{tail}\n"
            f"{p}}}"
        )
    return ",\n".join(entries)


def render_objects(
    view: _View, *, version: str | None, key: str, pixels: str, vis: str | None
) -> str:
    """A ``{"version", "face": {key: {...}}}`` file, byte-identical to ``json.dumps(indent=3)``."""
    head = f'{{\n{_I}"version": "{version}",\n' if version is not None else "{\n"
    body = _object_landmarks(view, pixels, vis, 3)
    return f'{head}{_I}"face": {{\n{_I}{_I}"{key}": {{\n{body}\n{_I}{_I}}}\n{_I}}}\n}}'


def render_legacy(view: _View) -> str:
    """The early export's three maps, byte-identical to ``json.dumps(indent=3)``."""
    x3, y3, z3 = _floats(view.x3), _floats(view.y3), _floats(view.z3)
    px, py = _ints(view.row), _ints(view.col)
    p, q = _I * 2, _I * 3
    m3 = ",\n".join(
        f'{p}"{i}": [\n{q}{x3[i]},\n{q}{y3[i]},\n{q}{z3[i]}\n{p}]' for i in range(len(x3))
    )
    m2 = ",\n".join(f'{p}"{i}": [\n{q}{px[i]},\n{q}{py[i]}\n{p}]' for i in range(len(px)))
    mv = ",\n".join(f'{p}"{i}": {"true" if v else "false"}' for i, v in enumerate(view.visible))
    return (
        f'{{\n{_I}"keypoints_3d_coordinates": {{\n{m3}\n{_I}}},\n'
        f'{_I}"keypoints_2d_coordinates": {{\n{m2}\n{_I}}},\n'
        f'{_I}"is_visible": {{\n{mv}\n{_I}}}\n}}'
    )


def _subset(view: _View, ids: tuple[int, ...]) -> _View:
    sel = list(ids)
    return _View(
        view.x3[sel],
        view.y3[sel],
        view.z3[sel],
        view.row[sel],
        view.col[sel],
        view.visible[sel],
        view.metadata,
    )


def _files(
    layout: str, view: _View, cam: str, version: str | None, extras: bool
) -> Iterator[tuple[str, str]]:
    kp = f"{cam}/key_points"
    std = _subset(view, _STANDARD_68)
    if layout == "legacy":
        yield f"{cam}/dense_keypoints.json", render_legacy(view)
        if extras:
            text = render_legacy(std)
            # the early exports number their 68 standard points from "1"
            yield f"{cam}/standard_keypoints.json", _renumber_from_one(text)
        return
    spec: dict[str, tuple[str | None, str, str | None]] = {
        "faces": (version, "float", "string"),
        "in_cabin": (version, "int", None),
        "documented": (version or "2.0.0", "int", "bool"),
    }
    ver, pixels, vis = spec[layout]
    key = "standard" if layout == "documented" else "dense"
    yield (
        f"{kp}/face_dense_key_points.json",
        render_objects(view, version=ver, key=key, pixels=pixels, vis=vis),
    )
    if extras and layout != "documented":
        yield (
            f"{kp}/face_standard_key_points.json",
            render_objects(std, version=ver, key="standard", pixels=pixels, vis=vis),
        )
        grouped = layout == "faces"
        yield f"{kp}/all_key_points.json", _all_key_points(view, std, ver, pixels, vis, grouped)
        if layout == "faces":
            for name, key, parts in (("head", "head", _HEAD), ("ears", "ears", _EARS)):
                yield f"{kp}/{name}_key_points.json", _grouped(view, ver, key, parts, pixels, vis)
        meta = {"version": "1.1.0", "camera_name": cam, **view.metadata}
        if layout != "faces" or ver is None:
            del meta["version"]  # as the real in-cabin and older Faces exports
        yield f"{cam}/camera_metadata.json", json.dumps(meta, indent=3)


def _all_key_points(
    view: _View, std: _View, ver: str | None, pixels: str, vis: str | None, grouped: bool
) -> str:
    dense = json.loads(render_objects(view, version=ver, key="dense", pixels=pixels, vis=vis))
    standard = json.loads(render_objects(std, version=ver, key="standard", pixels=pixels, vis=vis))
    dense["face"]["standard"] = standard["face"]["standard"]
    for key, parts in (("head", _HEAD), ("ear", _EARS)) if grouped else ():
        dense[key] = json.loads(_grouped(view, None, key, parts, pixels, vis))[key]
    return json.dumps(dense, indent=3)


# Head and ear points as in the real Faces exports: groups of ids "1".. (head) or
# "0".. (ears) of 12/24/21/24 and 55 points; values borrowed from face-mesh landmarks
# near each group, so they project consistently through the same camera.
_HEAD: dict[str, tuple[tuple[int, ...], int]] = {
    "top": ((10, 109, 338, 67, 297, 103, 332, 54, 284, 151, 108, 337), 1),
    "left": (tuple(range(250, 274)), 1),
    "back": (tuple(range(300, 321)), 1),
    "right": (tuple(range(20, 44)), 1),
}
_EARS: dict[str, tuple[tuple[int, ...], int]] = {
    "left": (tuple(range(400, 455)), 0),
    "right": (tuple(range(130, 185)), 0),
}


def _grouped(
    view: _View,
    ver: str | None,
    key: str,
    parts: dict[str, tuple[tuple[int, ...], int]],
    pixels: str,
    vis: str | None,
) -> str:
    doc: dict[str, Any] = {} if ver is None else {"version": ver}
    doc[key] = {}
    for part, (ids, first) in parts.items():
        text = render_objects(_subset(view, ids), version=None, key="g", pixels=pixels, vis=vis)
        group = json.loads(text)["face"]["g"]
        doc[key][part] = {str(int(k) + first): v for k, v in group.items()}
    return json.dumps(doc, indent=3)


def _renumber_from_one(text: str) -> str:
    doc = json.loads(text)
    for name, m in doc.items():
        doc[name] = {str(int(k) + 1): v for k, v in m.items()}
    return json.dumps(doc, indent=3)


Render = Callable[..., str]
