"""The package's one C extension, kpcompile.ingest._walk (a folder walk without the GIL).

Everything else is in pyproject.toml. The extension is optional: where it cannot be
built, kpcompile walks folders in Python (the same result, slower).
"""

import sys

from setuptools import Extension, setup

# Linux system calls (getdents64): elsewhere the Python walk is used.
setup(
    ext_modules=[
        Extension(
            "kpcompile.ingest._walk",
            ["kpcompile/ingest/_walk.c"],
            extra_compile_args=["-O2", "-std=c99", "-D_DEFAULT_SOURCE", "-D_GNU_SOURCE"],
            optional=True,
        )
    ]
    if sys.platform == "linux"
    else []
)
