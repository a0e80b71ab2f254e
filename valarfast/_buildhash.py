"""The fingerprint of the kernel sources, shared by setup.py (at build) and blobs.py (at import).

>>> len(source_hash(Path(__file__).parent.parent / "src_ext")) in (0, 64)
True
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: the files of src_ext/ that make the compiled module (generated .c files excluded)
SOURCE_SUFFIXES = (".pyx", ".pxd", ".pxi", ".h")


def source_hash(src_dir: Path) -> str:
    """sha256 over the names and bytes of the kernel sources in `src_dir` ('' if none)."""
    files = sorted(p for p in Path(src_dir).glob("*") if p.suffix in SOURCE_SUFFIXES)
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()
