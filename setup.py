"""Build of valarfast's compiled kernels (``valarfast._kernels``) with setuptools + Cython.

Metadata lives in pyproject.toml. numpy is not needed to build (typed memoryviews only).

- ``VALARFAST_DEBUG=1``: -O0 -g, Cython line tracing and gdb info, asserts on.
- ``VALARFAST_NO_SIMD=1``: leave out the AVX2 code (scalar kernels only).
- ``VALARFAST_REQUIRE_COMPILED=1``: a failed compile fails the install (else the extension is
  optional and valarfast falls back to numpy, saying so).

The build embeds a sha256 of src_ext/ in the module and writes ``valarfast/_build_info.py``;
at import valarfast refuses a compiled module whose sources have changed since.
Never ``-march=native``: AVX2 is chosen at run time (see src_ext/byteorder_simd.h).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
SRC = HERE / "src_ext"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _source_hash() -> str:
    spec = importlib.util.spec_from_file_location(
        "_vf_buildhash", HERE / "valarfast" / "_buildhash.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.source_hash(SRC))


def _compile_args(debug: bool) -> list[str]:
    if sys.platform == "win32":
        return ["/Od", "/Zi"] if debug else ["/O2"]
    if debug:
        return ["-O0", "-g3", "-UNDEBUG"]
    return ["-O3", "-fno-strict-aliasing"]


def _write_build_info(source_hash: str, debug: bool, simd: bool) -> None:
    text = (
        '"""Written by setup.py at build time; do not edit (see valarfast/blobs.py)."""\n\n'
        f"SOURCE_HASH = {source_hash!r}\n"
        f"DEBUG = {debug!r}\n"
        f"SIMD_CODE = {simd!r}\n"
    )
    target = HERE / "valarfast" / "_build_info.py"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def _extensions() -> list[Extension]:
    from Cython.Build import cythonize

    debug = _flag("VALARFAST_DEBUG")
    simd = not _flag("VALARFAST_NO_SIMD")
    source_hash = _source_hash()
    _write_build_info(source_hash, debug, simd)
    macros = [
        ("VALARFAST_SOURCE_HASH", f'"{source_hash}"'),
        ("VALARFAST_DEBUG_BUILD", str(int(debug))),
    ]
    if debug:
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    if not simd:
        macros.append(("VALARFAST_NO_SIMD", "1"))
    ext = Extension(
        "valarfast._kernels",
        sources=["src_ext/_kernels.pyx"],
        include_dirs=["src_ext"],
        define_macros=macros,
        extra_compile_args=_compile_args(debug),
        extra_link_args=["-g"] if debug and sys.platform != "win32" else [],
    )
    directives = {"language_level": "3", "embedsignature": True}
    if debug:
        directives.update({"linetrace": True, "profile": True})
    extensions = cythonize(
        [ext],
        include_path=["src_ext"],
        compiler_directives=directives,
        gdb_debug=debug,
        force=debug,
        quiet=True,
    )
    # cythonize() drops optional=True: set it afterwards. Without a C compiler the install
    # still succeeds and valarfast runs its numpy fallback (an ImportError when
    # VALARFAST_REQUIRE_COMPILED=1).
    for extension in extensions:
        extension.optional = not _flag("VALARFAST_REQUIRE_COMPILED")
    return extensions


setup(ext_modules=_extensions())
