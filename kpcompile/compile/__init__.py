"""Compile, the third stage: plan shards, run workers that parse and write Parquet.

Each shard (:mod:`~kpcompile.compile.plan`) is compiled by a worker
(:mod:`~kpcompile.compile.shard`) into the staging area of a new snapshot
(:class:`~kpcompile.compile.stage.Stage`, provided by the store); executors
(:mod:`~kpcompile.compile.executor`) run the workers in this process, in a pool of
local worker processes (:mod:`~kpcompile.compile.pool`, whose workers run
:mod:`~kpcompile.compile.serve`) or on Dask.
"""
