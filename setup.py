"""The package's C extensions: kpcompile.ingest._native (a folder walk and page-cache
reads without the GIL) and kpcompile.parsing._scan (a keypoint file's bytes straight
into columns).

Everything else is in pyproject.toml. Both are optional: where they cannot be
built, kpcompile walks folders and parses files in Python (the same results, slower).
"""

import sys

from setuptools import Extension, setup

# Linux system calls (getdents64, preadv2): elsewhere the Python code is used.
setup(
    ext_modules=[
        Extension(
            "kpcompile.ingest._native",
            ["kpcompile/ingest/_native.c"],
            extra_compile_args=["-O2", "-std=c99", "-D_DEFAULT_SOURCE", "-D_GNU_SOURCE"],
            optional=True,
        ),
        Extension(
            "kpcompile.parsing._scan",
            ["kpcompile/parsing/_scan.c"],
            extra_compile_args=["-O2", "-std=c99", "-D_DEFAULT_SOURCE", "-D_GNU_SOURCE"],
            optional=True,
        ),
    ]
    if sys.platform == "linux"
    else []
)
