"""Peers that the benchmarks measure kpcompile against, each a standalone script."""
