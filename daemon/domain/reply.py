"""What every SQL reply model shares: frozen, validated by pydantic, and the JSON values replies are made of.

Either database path hands over the same JSON (PostgreSQL's `to_json`/`json_agg` on the direct path,
PostgREST's answer on the Supabase path). `Model.model_validate(row)` reads it: a row that is not what the
SQL function promises raises pydantic's ValidationError (a ValueError) naming the reply and the field. Keys a
function adds later are ignored, so it can grow one before every replica reads it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator

# Integers, decimals and exponents as PostgreSQL and PostgREST write them; float() alone would
# also take "nan", "inf", "1_000" and surrounding whitespace.
_NUMERAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class Reply(BaseModel):
    """A SQL function's reply (or one of its rows)."""

    # A reply may carry patient details or encrypted tokens, and a validation error may reach the logs: it
    # names the field and what was wrong, never the value given.
    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)


def number(value: object) -> float:
    """A finite, non-negative number from a JSON value: int, float or a numeral string."""
    # bool is an int to Python, but true/false in a count means the query is wrong.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if isinstance(value, str) and not _NUMERAL.fullmatch(value):
        raise ValueError(f"expected a numeral, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    if result < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return result


def count(value: object) -> int:
    """A whole, non-negative number from a JSON value (see `number`)."""
    result = number(value)
    if not result.is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(result)


# PostgREST sends bigint and numeric as JSON numbers or numeral strings; a wrong number on a dashboard is
# worse than a missing one.
Number = Annotated[float, PlainValidator(number)]
Count = Annotated[int, PlainValidator(count)]


def null_as(default: Any) -> BeforeValidator:
    """A field whose JSON null means `default` (a missing key does too, when the field has that default)."""
    return BeforeValidator(lambda value: default if value is None else value)


def rows_as_tuples(*keys: str) -> BeforeValidator:
    """A list of JSON objects read as tuples of their `keys`' values, in that order."""

    def pick(row: object) -> object:
        if not isinstance(row, Mapping):
            return row  # the tuple's own validation says what is wrong
        missing = [key for key in keys if key not in row]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return tuple(row[key] for key in keys)

    return BeforeValidator(lambda rows: [pick(row) for row in rows] if isinstance(rows, list) else rows)
