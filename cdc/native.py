"""The compiled per-row path: which of its C extensions this installation has, and the one
log line that says when the Python path is used instead.

Two extensions make it (built by `pip install` from setup.py where a C compiler exists):
`cdc.source._rownative` decodes row images and `cdc.transform._docnative` encodes documents.
Each has a Python twin that is its fallback and oracle (`cdc.source.rowdecode`,
`cdc.transform.mapping`). `CDC_NATIVE=0` in the environment switches both off, for
benchmarks and for comparing the paths.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)


PLAN_VERSION = 1
"""The plan format both extensions read; an extension built from other sources (an in-place
build older than the code) reports another one and is not used."""
stale: list[str] = []


def _load(name: str) -> ModuleType | None:
    try:
        module = importlib.import_module(name)
    except ImportError:  # not compiled where the package was installed
        return None
    if getattr(module, "PLAN_VERSION", None) != PLAN_VERSION:
        stale.append(name)
        return None
    return module


rownative = _load("cdc.source._rownative")
docnative = _load("cdc.transform._docnative")
_announced = False


def enabled() -> bool:
    """Whether compiled code may be used in this process (`CDC_NATIVE` is not `0`); says once,
    the first time it is asked, when the Python path is used instead."""
    on = os.environ.get("CDC_NATIVE", "1") != "0"
    if not on:
        _announce("the compiled row path is switched off by CDC_NATIVE=0; using the Python one")
    elif stale:
        _announce(
            f"the compiled row path is not available ({', '.join(stale)} was built from other "
            "sources; run `pip install` again); using the Python one, which costs more CPU "
            "per row",
            logging.WARNING,
        )
    elif rownative is None or docnative is None:
        missing = [
            n for n, m in (("_rownative", rownative), ("_docnative", docnative)) if m is None
        ]
        _announce(
            f"the compiled row path is not available ({', '.join(missing)} not built: no C "
            "compiler when the package was installed); using the Python one, which costs "
            "more CPU per row",
            logging.WARNING,
        )
    return on


def _announce(message: str, level: int = logging.INFO) -> None:
    global _announced
    if not _announced:
        _announced = True
        log.log(level, message)
