"""Value types of config keys, checked by jsonargparse when a config is parsed.

A key's type says what it takes (`PositiveInt`, `OpenUnitInterval`, `Literal[...]`), so that a bad
value is refused at parse time with the key's name, before any class is built;
`lamina.user_errors.expected_got` words jsonargparse's refusal as "expected ..., got ...". Checks
that span keys stay in code. Calling a constructor from Python checks nothing of this.

The float types here are finite: jsonargparse's own NonNegativeFloat and PositiveFloat take `inf`,
which a plain `float` key refuses. A type's name ends in `Int` when its values are integers (the
one-line message says "an integer" or "a number" by it).
"""

from __future__ import annotations

import math
from typing import Literal

from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, OpenUnitInterval, PositiveInt, restricted_number_type

from lamina.model import ACTIVATIONS

__all__ = [
    "Activation", "ClosedUnitInterval", "Fraction", "NonNegativeInt", "NonNegativeNumber", "OpenUnitInterval",
    "PositiveInt", "PositiveNumber", "at_least", "plain",
]

NonNegativeNumber = restricted_number_type("NonNegativeNumber", float, [(">=", 0), ("<", math.inf)])
PositiveNumber = restricted_number_type("PositiveNumber", float, [(">", 0), ("<", math.inf)])
Fraction = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)])  # [0, 1): dropout, AdamW betas
Activation = Literal[ACTIVATIONS]


def at_least(n: int) -> type:
    """The integers >= n (one type per n: jsonargparse returns the registered one again)."""
    return restricted_number_type(f"AtLeast{n}Int", int, (">=", n))


def plain(value):
    """The builtin int or float of a value parsed into a restricted number type, which jsonargparse
    hands over as an instance of the type's own subclass; anything else unchanged. What reaches a
    checkpoint must be a builtin (torch.load with weights_only refuses other classes)."""
    if isinstance(value, bool):
        return value
    for base in (int, float):
        if isinstance(value, base) and type(value) is not base:
            return base(value)
    return value
