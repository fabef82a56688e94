"""The package's one C extension, kpcompile.ingest._native (a folder walk and page-cache
reads without the GIL).

Everything else is in pyproject.toml. The extension is optional: where it cannot be
built, kpcompile walks folders in Python (the same result, slower).
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
        )
    ]
    if sys.platform == "linux"
    else []
)
