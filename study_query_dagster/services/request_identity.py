"""Request identity: the one canonical JSON spelling that hashes and fingerprints are taken of."""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """`value` as JSON with sorted keys, no spaces and non-ASCII kept as is: equal values give
    equal text, so the text can be hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
