"""Tables of the docs site generated from the code, so they cannot drift from it.

The pages call these functions from cog blocks (``<!-- [[[cog ... ]]] -->``);
``make docs`` rewrites the blocks (``cog -r``), ``make lint`` and
``tests/test_docs.py`` fail when a page no longer matches the code
(``cog --check``). Each function returns Markdown.

Sources: the click command objects (:func:`cli_reference`), ``kpcompile/errors.py``
(:func:`error_codes`, :func:`exit_codes`), :class:`~kpcompile.options.BuildOptions`
(:func:`build_options`), the Arrow schemas (:func:`table_columns`), the
package's own source files, read with :mod:`ast` (:func:`modules`,
:func:`stage_imports`, :func:`interface`), and the commands' own output
(:func:`session_output`: the getting-started session, run).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kpcompile"

STAGES: tuple[str, ...] = ("ingest", "parsing", "compile", "store", "query")
"""The stage subpackages, in pipeline order: no stage imports a later one."""


def _cell(text: str) -> str:
    """Text made safe for one cell of a Markdown table."""
    return " ".join(text.split()).replace("|", "\\|")


def _rst(text: str) -> str:
    """Docstring markup as Markdown: roles and double backquotes become code spans."""

    def role(m: re.Match[str]) -> str:
        target = m.group(2)
        return f"`{target.rsplit('.', 1)[-1] if m.group(1) else target}`"

    text = re.sub(r":[a-z]+:`(~?)([^`]+)`", role, text)
    return text.replace("``", "`").replace("**", r"\*\*")


def _code(text: str) -> str:
    """A code span for a table cell (Python-Markdown tables allow ``|`` inside code spans)."""
    return f"`{' '.join(text.split())}`"


def _table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column (``l`` or ``r``)."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


# --- errors.py ----------------------------------------------------------------------------


def _member_docs(path: Path, class_name: str) -> list[tuple[str, Any, str]]:
    """``(name, value, docstring)`` of each member of an enum class, read from its source.

    Attribute docstrings (a string right after ``NAME = value``) are not kept at run
    time, so they are read from the source with :mod:`ast`.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    members: list[tuple[str, Any, str]] = []
    body = cls.body
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        doc = ""
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            doc = inspect.cleandoc(after.value.value)
        value = node.value.value if isinstance(node.value, ast.Constant) else None
        members.append((node.targets[0].id, value, doc))
    return members


def error_codes() -> str:
    """The table of :class:`kpcompile.ErrorCode`: each code and what it rejects."""
    from kpcompile.errors import ErrorCode

    docs = {name: doc for name, _, doc in _member_docs(PACKAGE / "errors.py", "ErrorCode")}
    rows = []
    for code in ErrorCode:
        doc = docs.get(code.name)
        if not doc:
            msg = f"ErrorCode.{code.name} has no docstring in kpcompile/errors.py"
            raise ValueError(msg)
        rows.append([f"`{code.value}`", _cell(_rst(doc))])
    return _table(["code", "the file is rejected when"], rows)


def exit_codes() -> str:
    """The table of the ``kpcompile`` command's exit codes."""
    from kpcompile.errors import EXIT_CODE_MEANINGS, ExitCode

    missing = [c.name for c in ExitCode if c not in EXIT_CODE_MEANINGS]
    if missing:
        msg = f"EXIT_CODE_MEANINGS has no meaning for {', '.join(missing)}"
        raise ValueError(msg)
    rows = [[str(int(c)), f"`{c.name}`", _cell(EXIT_CODE_MEANINGS[c])] for c in ExitCode]
    return _table(["code", "`ExitCode`", "meaning"], rows, "rll")


# --- options.py -----------------------------------------------------------------------------


def build_options() -> str:
    """The table of :class:`kpcompile.BuildOptions` fields: type, default, role, flag, help."""
    from kpcompile.options import option_fields

    rows = []
    for f in option_fields():
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool | None":
            flag = f"{flag}/--no-{flag[2:]}"
        flags = f"`{flag}`" + (f", `{f.metadata['short']}`" if f.metadata["short"] else "")
        rows.append(
            [
                f"`{f.name}`",
                _code(str(f.type)),
                f"`{f.default!r}`",
                f.metadata["role"],
                flags,
                _cell(f.metadata["help"]),
            ]
        )
    return _table(["field", "type", "default", "role", "CLI", "help"], rows)


# --- cli.py ----------------------------------------------------------------------------------


def _unset(value: Any) -> bool:
    """Whether a click default means "no default" (``None`` or click's UNSET sentinel)."""
    return value is None or type(value).__name__ == "Sentinel"


def _type(param: click.Parameter) -> str:
    t = param.type
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    if isinstance(t, click.Choice):
        return ", ".join(f"`{c}`" for c in t.choices)
    if isinstance(t, click.IntRange):
        bounds = []
        if t.min is not None:
            bounds.append(f"≥ {t.min}")
        if t.max is not None:
            bounds.append(f"≤ {t.max}")
        return " ".join(["integer", *bounds])
    if isinstance(t, click.Path):
        return "path"
    return {"integer": "integer", "text": "text", "float": "number"}.get(t.name, t.name)


def _default(param: click.Option) -> str:
    if param.required:
        return "required"
    default = param.default
    if param.is_flag and param.secondary_opts:
        if _unset(default):
            return "—"
        return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
    if param.is_flag:
        return "off"
    if _unset(default):
        return "—"
    return f"`{default}`"


def _names(param: click.Option) -> str:
    opts = sorted(param.opts, key=lambda o: (o.startswith("--"), o))
    names = ", ".join(f"`{o}`" for o in opts)
    if param.secondary_opts:
        names += " / " + ", ".join(f"`{o}`" for o in param.secondary_opts)
    return names


def _help_markdown(text: str) -> str:
    """A click help text as Markdown: ``\\b`` blocks (examples) become code blocks."""
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        if para.startswith("\b\n"):
            head, _, body = para[2:].partition("\n")
            out.append(f"{head}\n\n```\n{inspect.cleandoc(body)}\n```")
        else:
            out.append(" ".join(para.split()))
    return "\n\n".join(out)


def _command(name: str, cmd: click.Command, parent: click.Context) -> str:
    ctx = click.Context(cmd, info_name=name, parent=parent)
    pieces = " ".join(cmd.collect_usage_pieces(ctx))
    parts = [f"## {name}\n", f"```\n{ctx.command_path} {pieces}\n```\n"]
    parts.append(_help_markdown(cmd.help or "") + "\n")
    args = [p for p in cmd.get_params(ctx) if isinstance(p, click.Argument)]
    if args:
        rows = [
            [f"`{p.human_readable_name}`", _type(p), "yes" if p.required else "no"] for p in args
        ]
        parts.append(_table(["argument", "type", "required"], rows))
    options = [
        p for p in cmd.get_params(ctx) if isinstance(p, click.Option) and "--help" not in p.opts
    ]
    if options:
        rows = [[_names(p), _type(p), _default(p), _cell(p.help or "")] for p in options]
        parts.append(_table(["option", "type", "default", "help"], rows))
    return "\n".join(parts)


def cli_reference() -> str:
    """Every ``kpcompile`` command: usage, help and a table of its arguments and options.

    Commands come in the order ``cli.py`` defines them; ``-h``/``--help`` is left
    out of the tables (every command has it).
    """
    from kpcompile.cli import cli

    # with the group's settings, as a real run has them: a context without them
    # would leave each command's help option cached without "-h"
    root = click.Context(cli, info_name="kpcompile", **cli.context_settings)
    assert isinstance(cli, click.Group)
    sections = [_command(name, cmd, root) for name, cmd in cli.commands.items()]
    return "\n".join(sections)


def command_list() -> str:
    """One line per command: its name and the first line of its help."""
    from kpcompile.cli import cli

    assert isinstance(cli, click.Group)
    rows = [
        [f"[`{name}`](#{name})", _cell(cmd.get_short_help_str(limit=200))]
        for name, cmd in cli.commands.items()
    ]
    return _table(["command", "what it does"], rows)


# --- schema.py -------------------------------------------------------------------------------

COLUMNS: dict[str, dict[str, str]] = {
    "keypoints": {
        "datapoint": "folder above the camera folder, relative to SOURCE",
        "camera": "camera folder name; also the hive partition key by default",
        "kp_id": "MediaPipe landmark id 0-467",
        "x3": "`global_3d.x`, bit-exact to the JSON",
        "y3": "`global_3d.y`, bit-exact to the JSON",
        "z3": "`global_3d.z`, bit-exact to the JSON",
        "px": "`pixel_2d.x` as written (integers converted exactly); the image *row* in "
        "the real exports",
        "py": "`pixel_2d.y` as written; the image *column* in the real exports",
        "visible": "`is_visible`; null where the layout has none",
    },
    "files": {
        "path": "the file, relative to SOURCE",
        "datapoint": "as in `keypoints`",
        "camera": "as in `keypoints`",
        "status": "`ok` (compiled) or `rejected` (its reason is in `errors`)",
        "layout": "`faces`, `in_cabin`, `legacy` or `documented`; null when rejected",
        "version": "the `version` field; null when the layout has none or the file was rejected",
        "landmarks": "468 for a compiled file, null when rejected",
        "visible": "how many landmarks are visible; null when the layout has no visibility",
        "bytes": "size of the file; null when it was not read",
        "mtime_ns": "modification time of the file (nanoseconds since the epoch)",
        "checksum": "`crc32:` and the CRC-32 of the bytes in hex; null when not read",
    },
    "errors": {
        "path": "the rejected file (a landmark file, or a set file with `--sets`)",
        "code": "an [error code](errors.md#error-codes)",
        "message": "what is wrong, naming the landmark (the file is in `path`)",
    },
    "face_standard": {
        "datapoint": "as in `keypoints`",
        "camera": "as in `keypoints`",
        "part": "the sub-group: null for `face_standard`, `top`/`left`/`back`/`right` for "
        "`head`, `left`/`right` for `ears`",
        "kp_id": 'the id exactly as written in the source (`"01"`, `"1"`, `"0"`)',
        "x3": "`global_3d.x`",
        "y3": "`global_3d.y`",
        "z3": "`global_3d.z`",
        "px": "`pixel_2d.x` as written",
        "py": "`pixel_2d.y` as written",
        "visible": "`is_visible`; null where the file has none",
    },
    "cameras": {
        "datapoint": "as in `keypoints`",
        "camera": "as in `keypoints`",
        "camera_name": "`camera_name` of `camera_metadata.json`, as written",
        "camera_type": "`camera_type`",
        "width": "`resolution_px.x`: image width in pixels",
        "height": "`resolution_px.y`: image height in pixels",
        "focal_length": "`focal_length` as written",
        "location_x": "`location.x`: camera position",
        "location_y": "`location.y`",
        "location_z": "`location.z`",
        "aspect_x": "`aspect_px.x`: pixel aspect",
        "aspect_y": "`aspect_px.y`",
        "intrinsic": "`intrinsic_matrix`, 3x3 as 9 values, row-major",
        "extrinsic": "`extrinsic_matrix`, 3x4 as 12 values, row-major",
    },
}
"""What each column holds. A column of a schema missing here (or a column described
here that no schema has) makes :func:`table_columns` fail, so a new column cannot be
left undocumented."""


def table_columns(table: str) -> str:
    """The columns of a snapshot table: name, Arrow type, nullable, what it holds."""
    from kpcompile.schema import SCHEMAS

    schema = SCHEMAS[table]
    described = COLUMNS[table]
    names = set(schema.names)
    if names != set(described):
        msg = (
            f"docs/gen.py COLUMNS[{table!r}] is out of date: undocumented "
            f"{sorted(names - set(described))}, no longer in the schema "
            f"{sorted(set(described) - names)}"
        )
        raise ValueError(msg)
    rows = [
        [f"`{f.name}`", f"`{f.type}`", "yes" if f.nullable else "no", described[f.name]]
        for f in schema
    ]
    return _table(["column", "type", "null", "holds"], rows)


# --- the package's modules -------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts
    }


def _group(module: str) -> str:
    """The stage subpackage a module belongs to, or ``kpcompile.<name>`` for a top module."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    return module


def modules() -> str:
    """One row per module of the package: its path and the first line of its docstring.

    Stages come in pipeline order, then the modules outside the stages.
    """
    sources = _sources()

    def order(module: str) -> tuple[int, str]:
        group = _group(module)
        return (STAGES.index(group) if group in STAGES else len(STAGES), module)

    rows = []
    for module in sorted(sources, key=order):
        tree = ast.parse(sources[module].read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        if module in ("kpcompile.__main__", "kpcompile._version"):
            continue
        first = doc.strip().splitlines()[0] if doc else "*(no docstring)*"
        path = sources[module].relative_to(PACKAGE).as_posix()
        rows.append([f"`{path}`", _cell(_rst(first))])
    return _table(["module (in `kpcompile/`)", "what it is for"], rows)


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere (lazy and type-only too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kpcompile"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                pkg = module.split(".")
                if path.name != "__init__.py":
                    pkg = pkg[:-1]
                base = ".".join([*pkg[: len(pkg) - node.level + 1], node.module])
            if not base.startswith("kpcompile"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def stage_imports() -> str:
    """Which stages and shared modules each stage imports, with a check of the order."""
    sources = _sources()
    known = set(sources)
    uses: dict[str, set[str]] = {s: set() for s in STAGES}
    for module, path in sources.items():
        group = _group(module)
        if group not in STAGES:
            continue
        for imported in _imports(module, path, known):
            target = _group(imported)
            if target not in (group, "kpcompile"):
                uses[group].add(target)
    rows = []
    later: list[str] = []
    for stage in STAGES:
        stages = [s for s in STAGES if s in uses[stage]]
        shared = sorted(u for u in uses[stage] if u not in STAGES)
        later += [f"{stage} → {s}" for s in stages if STAGES.index(s) > STAGES.index(stage)]
        rows.append(
            [
                f"`{stage}`",
                ", ".join(f"`{s}`" for s in stages) or "—",
                ", ".join(f"`{m.removeprefix('kpcompile.')}`" for m in shared) or "—",
            ]
        )
    table = _table(["stage", "imports stages", "imports shared modules"], rows)
    verdict = (
        "No stage imports a later one."
        if not later
        else "**A stage imports a later one:** " + ", ".join(later) + "."
    )
    return f"{table}\n{verdict}\n"


def interface(module: str, class_name: str) -> str:
    """The methods of an interface class: signature and the first line of the docstring."""
    path = PACKAGE / (module.removeprefix("kpcompile.").replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    rows = []
    for node in cls.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        abstract = any(
            (isinstance(d, ast.Name) and d.id == "abstractmethod")
            or (isinstance(d, ast.Attribute) and d.attr == "abstractmethod")
            for d in node.decorator_list
        )
        args = [a.arg for a in node.args.args[1:]] + [a.arg for a in node.args.kwonlyargs]
        doc = ast.get_docstring(node) or ""
        rows.append(
            [
                f"`{node.name}({', '.join(args)})`",
                "abstract" if abstract else "provided",
                _cell(_rst(doc.splitlines()[0]) if doc else ""),
            ]
        )
    return _table(["method", "", "what it does"], rows)


def results(calls: list[tuple[str, str, str]]) -> str:
    """A table of functions and the dataclass each returns, with the class's attributes.

    ``calls`` holds ``(call, module, class name)``; attributes come from
    :func:`dataclasses.fields`, so a new field shows up here by itself.
    """
    import importlib

    rows = []
    for call, module, name in calls:
        cls = getattr(importlib.import_module(module), name)
        attrs = ", ".join(f"`{f.name}`" for f in dataclasses.fields(cls))
        rows.append([f"`{call}`", f"`{name}`", attrs])
    return _table(["call", "returns", "attributes"], rows)


QUICK_START: tuple[str, ...] = (
    "kpcompile synth dataset --datapoints 100 --cameras 2 --layout mixed",
    "kpcompile build dataset compiled --workers 2",
    "kpcompile info compiled",
    "kpcompile build dataset compiled --workers 2",
    "kpcompile snapshots compiled",
)
"""The getting-started session, run by :func:`session_output` for the page's examples."""

# What differs from run to run, and what the page shows instead: the -h examples' ids.
_PLACEHOLDER_IDS = ("20250101T120000Z-1a2b3c4d", "20250102T093000Z-5e6f7a8b")
_FIXED_MTIME_NS = 1_735_732_800 * 10**9  # 2025-01-01T12:00:00Z


@functools.cache
def _session(lines: tuple[str, ...]) -> tuple[str, ...]:
    """Run ``lines`` (``kpcompile ...``) in an empty temporary folder; their outputs.

    Snapshot ids and times, build durations and the folder's path differ on every
    run, so they are replaced by fixed ones; the files ``synth`` writes get one fixed
    modification time (the ``files`` table holds it, so the snapshot's compressed
    size would differ by a few bytes). Every other character is the command's.
    """
    import os
    import shlex
    import tempfile

    from click.testing import CliRunner

    from kpcompile.cli import cli

    outputs = []
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for line in lines:
                r = CliRunner().invoke(cli, shlex.split(line)[1:])
                if r.exit_code != 0:
                    msg = f"{line!r} failed (exit {r.exit_code}): {r.output}"
                    raise RuntimeError(msg)
                outputs.append(r.output.replace(os.path.realpath(tmp), "/home/me"))
                if line.startswith("kpcompile synth "):
                    for path in Path(tmp).rglob("*"):
                        os.utime(path, ns=(_FIXED_MTIME_NS, _FIXED_MTIME_NS))
        finally:
            os.chdir(here)
    ids = list(dict.fromkeys(re.findall(r"\b\d{8}T\d{6}Z-[0-9a-f]{8}\b", "".join(outputs))))
    assert len(ids) <= len(_PLACEHOLDER_IDS), ids
    text = "\x00".join(outputs)
    for real, shown in zip(ids, _PLACEHOLDER_IDS, strict=False):
        text = text.replace(real, shown).replace(_created(real), _created(shown))
    text = re.sub(r" in \d+\.\d+ s\b", " in 0.25 s", text)
    return tuple(text.split("\x00"))


def _created(snapshot: str) -> str:
    """The creation time in a snapshot id, as ``info`` prints it."""
    d, t = snapshot[:8], snapshot[9:15]
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}Z"


def session_commands(first: int, last: int) -> str:
    """Lines ``first``..``last`` of :data:`QUICK_START` as a code block."""
    return "```\n" + "\n".join(QUICK_START[first : last + 1]) + "\n```\n"


def session_output(*steps: int) -> str:
    """What the :data:`QUICK_START` lines ``steps`` print, as one code block."""
    out = _session(QUICK_START)
    return "```\n" + "".join(out[i] for i in steps) + "```\n"
