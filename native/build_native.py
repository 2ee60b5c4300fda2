"""cffi build script for gravixd's native protobuf decoder (API mode, out of line).

`setup.py` names it in `cffi_modules`, so `pip install .` and `pip install -e .` compile
`gravixd._native` from native/gravix_decode.c. The cdef comes from the header itself (the
region between its cdef markers), so the C and Python views cannot drift apart.

The extension is optional: without a working C compiler the install still succeeds and
gravixd runs on the pure `protobuf` path (gravixd.native logs that once).
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

NATIVE_DIR = Path(__file__).resolve().parent
HEADER = NATIVE_DIR / "gravix_decode.h"


def cdef_source(header: Path = HEADER) -> str:
    """The declarations between `/* cdef-begin */` and `/* cdef-end */`."""
    text = header.read_text()
    start = text.index("/* cdef-begin */") + len("/* cdef-begin */")
    return text[start : text.index("/* cdef-end */")]


ffibuilder = FFI()
ffibuilder.cdef(cdef_source())
ffibuilder.set_source(
    "gravixd._native",
    '#include "gravix_decode.h"',
    # Paths relative to the project root, where setuptools runs the build.
    sources=["native/gravix_decode.c"],
    include_dirs=["native"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
    # setuptools skips an optional extension that fails to compile instead of failing.
    optional=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
