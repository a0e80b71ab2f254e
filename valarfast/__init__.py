"""valarfast: fast, safe access to Valar from Python; a drop-in successor of valarpy.

>>> import valarfast as valarpy
>>> with valarpy.opened() as model:                # doctest: +SKIP
...     print(model.Refs.fetch("ref_four").id)
4

Names are imported on first use, so ``import valarfast`` stays cheap and never needs a server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from valarfast.errors import (
    UnsupportedOperationError,
    ValarLookupError,
    ValarTableTypeError,
    WriteNotEnabledError,
)

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access)
_LAZY_NAMES: dict[str, str] = {
    "Valar": "valarfast.connection",
    "opened": "valarfast.connection",
    "new_model": "valarfast.connection",
    "GlobalConnection": "valarfast.connection",
    "valarpy_info": "valarfast.connection",
}
_SUBMODULES = frozenset(
    {
        "batch", "blobs", "cache", "cli", "config", "connection", "demo", "engines", "errors",
        "guard", "metamodel", "model", "sandbox", "sqlite_schema", "streaming", "tunnel", "utils",
    }
)  # fmt: skip

__all__ = [
    "GlobalConnection",
    "UnsupportedOperationError",
    "Valar",
    "ValarLookupError",
    "ValarTableTypeError",
    "WriteNotEnabledError",
    "__version__",
    "new_model",
    "opened",
    "valarpy_info",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from valarfast.connection import GlobalConnection, Valar, new_model, opened, valarpy_info


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"valarfast.{name}")
    else:
        raise AttributeError(f"module 'valarfast' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES) | _SUBMODULES)
