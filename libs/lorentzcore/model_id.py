"""What a model id may be. A model id is also its directory name in a registry, so it is
limited to path-safe characters and may not be "." or "..".

Its own module, importing only ``re``, so a lean caller (an operator's emergency command)
can check an id without loading the numerics.
"""

from __future__ import annotations

import re

__all__ = ["MODEL_ID_PATTERN", "is_model_id"]

MODEL_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
_MODEL_ID_RE = re.compile(MODEL_ID_PATTERN)


def is_model_id(text: str) -> bool:
    """True for a usable model id: MODEL_ID_PATTERN, and not a directory alias ("." / "..")."""
    return _MODEL_ID_RE.fullmatch(text) is not None and text not in (".", "..")
