"""The symbol contract, declared once: every payload's ``symbol`` field and the operator
CLI's --symbol check use it. Standard library only, so the CLI's emergency commands can
validate a symbol without importing pydantic.

Symbols are case-sensitive (AAPL and aapl are different instruments; venues such as
crypto ones use lower case): 1-32 characters from A-Z a-z 0-9 . _ : / -.
"""

from __future__ import annotations

import re

SYMBOL_PATTERN = r"^[A-Za-z0-9._:/-]+$"
SYMBOL_MAX_LENGTH = 32
SYMBOL_RULE = "1-32 characters from A-Z a-z 0-9 . _ : / - (case-sensitive)"
_SYMBOL = re.compile(SYMBOL_PATTERN)


def symbol_problem(text: str) -> str | None:
    """Why ``text`` is not a valid symbol, or None when it is."""
    if len(text) > SYMBOL_MAX_LENGTH or not _SYMBOL.fullmatch(text):
        return f"invalid symbol {text!r}: a symbol is {SYMBOL_RULE}, e.g. AAPL or BTC-USD"
    return None
