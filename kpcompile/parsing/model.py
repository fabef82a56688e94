"""The parsed form of one keypoint file, shared by the fast and the careful parser."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kpcompile.schema import NUM_LANDMARKS as NUM_LANDMARKS  # re-exported

SUPPORTED_VERSIONS: tuple[str, ...] = ("2.0.0", "2.0.1")
"""Versions of the keypoint format that kpcompile reads (the ``version`` field)."""
LAYOUTS: tuple[str, ...] = ("faces", "in_cabin", "legacy", "documented")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Landmarks:
    """The 468 landmarks of one file, in id order.

    Attributes:
        layout: One of :data:`LAYOUTS`.
        version: The file's ``version`` field, or ``None`` for layouts without one.
        x3, y3, z3: ``global_3d`` coordinates, float64, exactly as written in the JSON.
        px, py: ``pixel_2d`` coordinates as float64 (integers are converted exactly).
        visible: ``is_visible`` per landmark as a bool array; ``None`` when no
            landmark of the file has it.
        visible_missing: ``True`` where a landmark lacks ``is_visible`` (its
            ``visible`` is then ``False`` and stored as null); ``None`` when none lacks it.
    """

    layout: str
    version: str | None
    x3: FloatArray
    y3: FloatArray
    z3: FloatArray
    px: FloatArray
    py: FloatArray
    visible: BoolArray | None
    visible_missing: BoolArray | None = None

    @property
    def visible_count(self) -> int | None:
        """How many landmarks are visible, or ``None`` when the file says nothing."""
        if self.visible is None:
            return None
        return int(np.count_nonzero(self.visible))

    def visible_list(self) -> list[bool | None]:
        """``is_visible`` per landmark as Python values, ``None`` where absent."""
        if self.visible is None:
            return [None] * NUM_LANDMARKS
        out: list[bool | None] = self.visible.tolist()
        if self.visible_missing is not None:
            for i in np.flatnonzero(self.visible_missing):
                out[i] = None
        return out
