"""The shapes of the files the tool reads back (pydantic models), and their
refusals said as an operator reads them: which field, what is wrong."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError


def field_path(loc: tuple[int | str, ...]) -> str:
    """('tests', 0, 'plan') -> 'tests[0].plan'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the whole value)"


def problems(exc: ValidationError, most: int = 3) -> str:
    """'field tables.x.rows: Input should be a valid integer; ...' (the first few)."""
    errors = exc.errors(include_url=False)
    said = [f"field {field_path(e['loc'])}: {e['msg']}" for e in errors[:most]]
    more = f" (and {len(errors) - most} more)" if len(errors) > most else ""
    return "; ".join(said) + more


def _aware_time(text: str) -> str:
    """An ISO time with its UTC offset, as the tool writes them (a time without
    one cannot be compared with the others)."""
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("a time needs its UTC offset (e.g. 2026-12-01T09:00:00+00:00)")
    return text


# Kept as text: the readers parse it with datetime.fromisoformat, as here.
IsoTime = Annotated[str, AfterValidator(_aware_time)]


class FileShape(BaseModel):
    """A run file's shape, as the tool writes it: the fields its readers use,
    of their types (strict: "12" is no number); fields it does not use are
    let through (a newer or older tool may add some)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


def line_check(shape: type[FileShape]) -> Callable[[dict], None]:
    """A JSON-lines record's check (engine.core.run_files.read_jsonl's check):
    a ValueError saying the fields, the line is said by the reader."""
    def check(record: dict) -> None:
        try:
            shape.model_validate(record)
        except ValidationError as exc:
            raise ValueError(problems(exc)) from None
    return check
