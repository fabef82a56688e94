"""Parsing, the second stage: the bytes of one file in, 468 landmarks (or a reason) out.

:func:`parse` is pure: no I/O, no global state, picklable, so any executor can
call it. The fast path (:mod:`kpcompile.parsing.fast`) decodes plainly valid
files; everything else goes to the careful path (:mod:`kpcompile.parsing.parse`),
which accepts it too or names exactly what is wrong.
"""

from kpcompile.parsing.model import LAYOUTS, NUM_LANDMARKS, SUPPORTED_VERSIONS, Landmarks
from kpcompile.parsing.parse import parse

__all__ = ["LAYOUTS", "NUM_LANDMARKS", "SUPPORTED_VERSIONS", "Landmarks", "parse"]
