"""``kpcompile report``: one self-contained HTML page describing a snapshot.

The page holds the snapshot's identity and options, its files, datapoints and
landmarks by layout, version and camera, the rejected files by code, visibility,
coordinate distributions, 3D consistency across cameras, reprojection error (with
``--sets``), sizes and a grid of sample faces. Numbers are HTML text; pictures
are SVG embedded as ``data:`` URIs; the page has no script and loads nothing, so
it opens offline and can be mailed or archived as one file.

The numbers come from :mod:`~kpcompile.reporting.data` (polars), the pictures
from :mod:`~kpcompile.reporting.figures` (matplotlib), the sections from
:mod:`~kpcompile.reporting.sections` and the page from the Jinja2 template
``templates/report.html.j2``. This module imports none of them (nor polars) until
a report is made, so the CLI's renderer can name :class:`ReportResult` cheaply.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpcompile._version import __version__
from kpcompile.errors import OptionsError
from kpcompile.query.outfiles import writing

if TYPE_CHECKING:
    from kpcompile.reporting.data import ReportData
    from kpcompile.reporting.sections import Section
    from kpcompile.store.base import Store

DEFAULT_PATH = "report.html"
"""Where :func:`report` writes when no path is given (the current folder)."""
SUFFIXES: tuple[str, ...] = (".html", ".htm")
TEMPLATE = "report.html.j2"


@dataclass(frozen=True, slots=True)
class ReportResult:
    """What :func:`report` wrote.

    Attributes:
        path: The HTML file.
        snapshot: The snapshot it describes.
        seconds: Time taken, reading the snapshot included.
        bytes: Size of the file.
        sections: Titles of the sections, in page order.
        missing: Sections with nothing to show, and why (title to reason).
    """

    path: Path
    snapshot: str
    seconds: float
    bytes: int
    sections: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


def report(
    out: str | os.PathLike[str] | Store,
    path: str | os.PathLike[str] | None = None,
    *,
    snapshot: str | None = None,
) -> ReportResult:
    """Write an HTML report of a snapshot (default: the current one) to ``path``.

    Args:
        out: Output folder or URL of ``kpcompile build``.
        path: The ``.html`` (or ``.htm``) file to write; default ``report.html``
            in the current folder. An existing file is replaced, whole, once the
            report is complete.
        snapshot: A snapshot id; ``None`` for the current snapshot.

    Raises:
        OptionsError: ``path`` does not end in ``.html`` or ``.htm``.
        SnapshotError: No such snapshot (or ``out`` holds none: OutputError).
        OutputError: ``path`` cannot be written; the message names it and why.

    Example:
        >>> r = kpcompile.report("compiled", "report.html")  # doctest: +SKIP
        >>> r.missing  # doctest: +SKIP
        {'Reprojection error': 'No cameras table: build with `kpcompile build --sets` ...'}
    """
    start = time.perf_counter()
    dest = Path(DEFAULT_PATH if path is None else path)
    _check_suffix(dest)
    from kpcompile.reporting.data import gather
    from kpcompile.reporting.sections import build_sections
    from kpcompile.store import open_store

    store = open_store(out)
    manifest = store.manifest(snapshot)
    with writing(dest) as tmp:
        data = gather(store, manifest)
        sections = build_sections(data)
        html = render(data, sections, store.uri(manifest.snapshot))
        tmp.write_text(html, encoding="utf-8")
    return ReportResult(
        path=dest,
        snapshot=manifest.snapshot,
        seconds=time.perf_counter() - start,
        bytes=len(html.encode("utf-8")),
        sections=[s.title for s in sections],
        missing={s.title: s.missing for s in sections if s.missing is not None},
    )


def _check_suffix(dest: Path) -> None:
    if dest.suffix.lower() not in SUFFIXES:
        what = f"suffix {dest.suffix!r}" if dest.suffix else "no suffix"
        msg = (
            f"the report is an HTML page, but {os.fspath(dest)!r} has {what}; "
            "name it with .html (e.g. -o report.html)"
        )
        raise OptionsError(msg)


def render(data: ReportData, sections: list[Section], location: str) -> str:
    """The page: the template filled with the headline numbers and the sections.

    Example:
        >>> html = render(gather(store, manifest), sections, "compiled")  # doctest: +SKIP
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kpcompile.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code_spans"] = code_spans
    template = env.get_template(TEMPLATE)
    return template.render(
        title=f"kpcompile report: {data.manifest.snapshot}",
        snapshot=data.manifest.snapshot,
        headline=headline(data),
        location=location,
        sections=sections,
        generated_by=f"kpcompile {__version__}",
    )


def code_spans(text: str) -> Any:
    """Escaped ``text`` whose backquoted parts become ``<code>`` elements.

    Example:
        >>> str(code_spans("run `kpcompile errors OUT` <now>"))
        'run <code>kpcompile errors OUT</code> &lt;now&gt;'
    """
    import re

    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def headline(data: ReportData) -> list[dict[str, Any]]:
    """The numbers at the top of the page: ``id``, ``label``, ``value`` and a ``note``."""
    m, c = data.manifest, data.manifest.counts
    ratio = m.source.bytes / m.output_bytes if m.output_bytes else 0.0
    rejected_note = f"+ {c.sets_rejected:,} --sets files" if c.sets_rejected else "landmark files"
    cards = [
        ("files", "files", f"{c.files:,}", "landmark files found"),
        ("compiled", "compiled", f"{c.compiled:,}", "in the keypoints table"),
        ("rejected", "rejected", f"{c.rejected:,}", rejected_note),
        ("datapoints", "datapoints", f"{c.datapoints:,}", "with a compiled file"),
        ("cameras", "cameras", f"{c.cameras:,}", "distinct camera names"),
        ("landmarks", "landmarks", f"{c.rows:,}", "rows of keypoints"),
        ("ratio", "compression", f"{ratio:.1f}x", "source bytes / snapshot bytes"),
    ]
    return [{"id": i, "label": label, "value": v, "note": note} for i, label, v, note in cards]
