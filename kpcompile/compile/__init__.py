"""Compile, the third stage: plan shards, run workers that parse and write Parquet.

Each shard (:mod:`~kpcompile.compile.plan`) is compiled by a worker
(:mod:`~kpcompile.compile.worker`) into the staging area of a new snapshot
(:class:`~kpcompile.compile.stage.Stage`, provided by the store); executors
(:mod:`~kpcompile.compile.executor`) run the workers in this process, in local
worker processes or on Dask.
"""
