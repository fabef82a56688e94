"""Build options: one frozen dataclass from which everything else is derived.

:class:`BuildOptions` is the single source of truth. Each field carries, in its
metadata, its help text and its *role*:

``output``
    Changes the bytes a build writes. Recorded in the manifest, and part of the
    keys that decide whether an incremental build may reuse the previous snapshot
    (:func:`reuse_keys`): a snapshot written with other values is never reused.
``policy``
    Decides *whether* a build publishes, not what it writes (``max_errors``).
    Recorded in the manifest.
``run``
    How this run executes (workers, progress bar, executor). Not recorded: the
    same snapshot comes out whatever they are.

The CLI's ``build`` options (:mod:`kpcompile.cli`), the manifest's ``options``
(:func:`recorded`), the reuse keys and the Parquet settings are all computed from
these fields, so a new option cannot be forgotten in one of them.
"""

from __future__ import annotations

import os
from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal

from kpcompile.errors import OptionsError

Role = Literal["output", "policy", "run"]

PARTITION_KEYS: tuple[str, ...] = ("camera", "none")
EXECUTORS: tuple[str, ...] = ("local", "dask")
COMPRESSION_LEVELS: dict[str, tuple[int, int] | None] = {
    "zstd": (-131072, 22),
    "snappy": None,
    "lz4": (1, 12),
    "gzip": (1, 9),
    "none": None,
}
"""Parquet codecs and the compression levels each accepts (``None``: no level)."""
COMPRESSIONS: tuple[str, ...] = tuple(COMPRESSION_LEVELS)
READ_AHEAD_MIB = 16
"""Default ``read_ahead``: MiB of reads each worker keeps in flight."""
READ_TIMEOUT_SECONDS = 120
"""Default ``read_timeout``: seconds before a read that has not finished rejects its file."""


def _option(
    default: Any,
    help: str,
    *,
    role: Role,
    choices: tuple[str, ...] | None = None,
    minimum: int | None = None,
    short: str | None = None,
    metavar: str | None = None,
) -> Any:
    meta = {
        "help": help,
        "role": role,
        "choices": choices,
        "minimum": minimum,
        "short": short,
        "metavar": metavar,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildOptions:
    """How a build runs and what it writes.

    Every field is also a ``kpcompile build`` option (``shard_files`` is
    ``--shard-files``). See the module docstring for the roles.

    Attributes:
        workers: Worker processes parsing in parallel; ``None`` means all cores.
            With ``1`` everything runs in the calling process.
        max_errors: How many rejected files still publish a snapshot (they are
            listed in the ``errors`` table). ``0``: any rejected file fails the build.
        partition_by: ``"camera"`` writes ``keypoints/camera=<name>/`` folders;
            ``"none"`` writes one folder.
        compression: Parquet codec for every table.
        compression_level: Codec level, ``None`` for the codec's default; checked
            against :data:`COMPRESSION_LEVELS`.
        shard_files: Source files per shard on average (one worker task, one
            Parquet file per partition; content-defined boundaries so incremental
            builds reuse shards). Not derived from ``workers``, so the output does
            not depend on the worker count.
        row_group_files: Source files per Parquet row group of ``keypoints``
            (x 468 rows). Workers write a row group at a time, so this, not the
            shard size, bounds their memory.
        max_file_bytes: Larger source files are rejected as ``too_large``
            without being read; bounds each worker's memory.
        sets: Also compile the other keypoint sets and camera metadata into the
            ``face_standard``, ``head``, ``ears`` and ``cameras`` tables.
        progress: Show a progress bar; ``None`` shows it when stderr is a terminal.
        full: Compile every file again instead of reusing OUT's current snapshot.
        executor: ``"local"`` (this machine's processes) or ``"dask"``.
        scheduler: Dask scheduler address; ``None`` starts a local Dask cluster.
        read_ahead: MiB of reads each worker keeps in flight ahead of the file it
            parses (counted at the listed sizes); ``0`` reads a file only when it
            is parsed. Does not change the output.
        read_timeout: Seconds a read may take; a read still unfinished then
            rejects its file as ``unreadable`` and the build goes on.
        plan_only: Measure the coordinator alone: list, plan and hand out every
            shard, but workers read, parse and write nothing and nothing is
            published (a benchmarking aid, e.g. with ``virtual://N/P``).

    Example:
        >>> BuildOptions(workers=2, max_errors=10).max_errors
        10
    """

    workers: int | None = _option(
        None, "Worker processes [default: all cores].", role="run", minimum=1, short="-j"
    )
    max_errors: int = _option(
        0, "Publish anyway when at most this many files are rejected.", role="policy", minimum=0
    )
    partition_by: str = _option(
        "camera",
        "Hive partition key of the keypoints table.",
        role="output",
        choices=PARTITION_KEYS,
    )
    compression: str = _option(
        "zstd", "Parquet compression codec.", role="output", choices=COMPRESSIONS
    )
    compression_level: int | None = _option(
        None,
        "Codec level: zstd -131072..22, lz4 1..12, gzip 1..9 [default: the codec's].",
        role="output",
        metavar="LEVEL",
    )
    shard_files: int = _option(
        512, "Source files per shard (one Parquet file per partition).", role="output", minimum=1
    )
    row_group_files: int = _option(
        256,
        "Source files per Parquet row group (x 468 rows); bounds workers' memory.",
        role="output",
        minimum=1,
    )
    max_file_bytes: int = _option(
        64 * 1024 * 1024,
        "Reject larger source files as too_large without reading them.",
        role="output",
        minimum=1,
        metavar="BYTES",
    )
    sets: bool = _option(
        False,
        "Also compile face.standard, head, ears and camera metadata into their own tables.",
        role="output",
    )
    progress: bool | None = _option(
        None, "Progress bar [default: when stderr is a terminal].", role="run"
    )
    full: bool = _option(
        False, "Compile every file again; do not reuse OUT's current snapshot.", role="run"
    )
    executor: str = _option(
        "local", "Run shards in local processes or as Dask tasks.", role="run", choices=EXECUTORS
    )
    scheduler: str | None = _option(
        None,
        "Dask scheduler (tcp://host:8786) [default: a local cluster of --workers processes].",
        role="run",
        metavar="ADDRESS",
    )
    read_ahead: int = _option(
        READ_AHEAD_MIB,
        "MiB of reads each worker keeps in flight while it parses; 0: no read-ahead.",
        role="run",
        minimum=0,
        metavar="MIB",
    )
    read_timeout: int = _option(
        READ_TIMEOUT_SECONDS,
        "Seconds a read may take before its file is rejected as unreadable.",
        role="run",
        minimum=1,
        metavar="SECONDS",
    )
    plan_only: bool = _option(
        False,
        "Benchmark the coordinator: plan and dispatch shards, but read, parse, write "
        "and publish nothing.",
        role="run",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f, getattr(self, f.name))
        _check_level(self.compression, self.compression_level)
        if self.scheduler is not None and self.executor != "dask":
            msg = (
                "scheduler is only used with executor='dask' (--executor dask); "
                f"got executor={self.executor!r}"
            )
            raise OptionsError(msg)

    @property
    def resolved_workers(self) -> int:
        """The number of worker processes actually used."""
        if self.workers is not None:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1

    @classmethod
    def from_kwargs(cls, options: BuildOptions | None, kwargs: dict[str, Any]) -> BuildOptions:
        """Merge keyword overrides into ``options``, naming unknown keywords."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            msg = f"unknown build option {unknown[0]!r}; valid options: {', '.join(sorted(names))}"
            raise OptionsError(msg)
        base = options or cls()
        values = {f.name: getattr(base, f.name) for f in fields(cls)}
        values.update(kwargs)
        return cls(**values)


def _check(f: Field[Any], value: Any) -> None:
    meta = f.metadata
    if value is None:
        return
    minimum, choices = meta["minimum"], meta["choices"]
    if minimum is not None and (isinstance(value, bool) or not isinstance(value, int)):
        msg = f"{f.name} must be an integer, got {value!r}"
        raise OptionsError(msg)
    if minimum is not None and value < minimum:
        msg = f"{f.name} must be at least {minimum}, got {value}"
        raise OptionsError(msg)
    if choices is not None and value not in choices:
        msg = f"{f.name} must be one of {', '.join(choices)}; got {value!r}"
        raise OptionsError(msg)


def _check_level(codec: str, level: int | None) -> None:
    if level is None:
        return
    if isinstance(level, bool) or not isinstance(level, int):
        msg = f"compression_level must be an integer, got {level!r}"
        raise OptionsError(msg)
    bounds = COMPRESSION_LEVELS[codec]
    if bounds is None:
        msg = f"compression {codec!r} takes no compression_level; leave it unset"
        raise OptionsError(msg)
    low, high = bounds
    if not low <= level <= high:
        msg = f"compression_level for {codec} must be between {low} and {high}, got {level}"
        raise OptionsError(msg)


def option_fields(role: Role | None = None) -> list[Field[Any]]:
    """The fields of :class:`BuildOptions`, all of them or those of one role, in order."""
    return [f for f in fields(BuildOptions) if role is None or f.metadata["role"] == role]


def reuse_keys() -> tuple[str, ...]:
    """Options that must equal the previous snapshot's for an incremental build to reuse it."""
    return tuple(f.name for f in option_fields("output"))


def recorded(options: BuildOptions) -> dict[str, Any]:
    """The options a manifest records: every ``output`` and ``policy`` field."""
    return {
        f.name: getattr(options, f.name)
        for f in fields(BuildOptions)
        if f.metadata["role"] != "run"
    }
