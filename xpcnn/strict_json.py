"""Strict JSON: what xpcnn writes (history.jsonl, ``--json`` lines, checkpoint headers) every JSON parser reads.

Python's ``json`` writes a NaN or infinite float as the bare word ``NaN`` or ``Infinity``, which strict parsers
(JavaScript's ``JSON.parse``, ``jq``, Go, Rust's serde) reject. :func:`dumps` writes them as ``null`` instead.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float inside dicts, lists and tuples replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value)`` as strict JSON: NaN and infinities become ``null`` (``allow_nan=False`` otherwise)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
