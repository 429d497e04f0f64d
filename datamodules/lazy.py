"""PEP 562 lazy exports: a package's public names load on first use, so its plain parts import without Lightning."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable, Callable]:
    """``(__all__, __getattr__, __dir__)`` for ``package``, whose name ``n`` lives in module ``exports[n]``."""

    def getattr_(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return sorted(exports), getattr_, dir_
