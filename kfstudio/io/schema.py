"""One declared schema per file we read, checked before anything is built from it.

A schema is a tree of small checkers (``Int``, ``Num``, ``Str``, ``Bool``, ``List``, ``Obj``,
``OneOf``, ``Nullable``, ``Anything``). ``validate(doc, schema, path, what)`` walks the document
and raises one ``FileFormatError`` naming the file and the field in plain words ("'7.json'
is not a valid brick manifest: architecture.width must be a number from 0.01 to 16, not -1").
Sizes are bounded here, so a manifest can never ask for a huge tensor.

We use plain classes rather than pydantic or msgspec: the schemas are small, the messages
must be ours (a non-expert reads them), and it adds no dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from kfstudio.core.errors import FileFormatError


class Invalid(Exception):
    """A field that does not fit its schema: where (a dotted path) and what is wrong."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where or 'the file'} {message}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Checker:
    def __call__(self, value: Any, where: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Checker):
    low: int
    high: int

    def __call__(self, value, where):
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise Invalid(where, f"must be a whole number from {self.low:,} to {self.high:,}, not {_shown(value)}")
        return value


@dataclass(frozen=True)
class Num(Checker):
    low: float
    high: float
    positive: bool = False

    def __call__(self, value, where):
        ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
              and self.low <= value <= self.high and (value > 0 or not self.positive))
        if not ok:
            sign = "a positive number" if self.positive else "a number"
            raise Invalid(where, f"must be {sign} from {self.low:g} to {self.high:g}, not {_shown(value)}")
        return value


@dataclass(frozen=True)
class Str(Checker):
    max_len: int = 1000
    nonempty: bool = False

    def __call__(self, value, where):
        if not isinstance(value, str) or len(value) > self.max_len or (self.nonempty and not value.strip()):
            need = "a non-empty text" if self.nonempty else "a text"
            raise Invalid(where, f"must be {need} of at most {self.max_len} characters, not {_shown(value)}")
        return value


class Bool(Checker):
    def __call__(self, value, where):
        if not isinstance(value, bool):
            raise Invalid(where, f"must be true or false, not {_shown(value)}")
        return value


class Anything(Checker):
    def __call__(self, value, where):
        return value


@dataclass(frozen=True)
class OneOf(Checker):
    values: tuple

    def __call__(self, value, where):
        if value not in self.values:
            raise Invalid(where, f"must be one of {', '.join(map(str, self.values))}, not {_shown(value)}")
        return value


@dataclass(frozen=True)
class Nullable(Checker):
    inner: Checker

    def __call__(self, value, where):
        return None if value is None else self.inner(value, where)


@dataclass(frozen=True)
class List(Checker):
    item: Checker
    min_len: int = 0
    max_len: int = 100_000

    def __call__(self, value, where):
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise Invalid(where, f"must be a list of {self.min_len} to {self.max_len:,} entries, not {_shown(value)}")
        return [self.item(v, f"{where}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True)
class Map(Checker):
    """A table whose keys are texts and whose values all have one schema."""

    value: Checker

    def __call__(self, value, where):
        if not isinstance(value, dict):
            raise Invalid(where, f"must be a table, not {_shown(value)}")
        return {str(k): self.value(v, f"{where}.{k}") for k, v in value.items()}


@dataclass(frozen=True)
class Obj(Checker):
    """A table with named fields; unknown fields are kept (newer minor additions)."""

    required: Mapping[str, Checker]
    optional: Mapping[str, Checker] = field(default_factory=dict)
    rules: Sequence[Callable[[dict, str], None]] = ()

    def __call__(self, value, where):
        if not isinstance(value, dict):
            raise Invalid(where, f"must be a table of fields, not {_shown(value)}")
        out = dict(value)
        for key, check in self.required.items():
            if key not in value:
                raise Invalid(_join(where, key), "is missing")
            out[key] = check(value[key], _join(where, key))
        for key, check in self.optional.items():
            if key in value:
                out[key] = check(value[key], _join(where, key))
        for rule in self.rules:
            rule(out, where)
        return out

    def extend(self, required: Mapping[str, Checker] = {}, optional: Mapping[str, Checker] = {},
               rules: Sequence[Callable[[dict, str], None]] = ()) -> "Obj":
        return Obj({**self.required, **required}, {**self.optional, **optional}, (*self.rules, *rules))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def validate(doc: Any, schema: Checker, path: str | Path, what: str,
             error: type[FileFormatError] = FileFormatError) -> Any:
    """Check ``doc`` (parsed from ``path``) against ``schema``; a plain-words ``error`` if it does not fit."""
    try:
        return schema(doc, "")
    except Invalid as exc:
        raise error(f"'{Path(path).name}' is not a valid {what}: {exc}.") from None
    except RecursionError:
        raise error(f"'{Path(path).name}' is not a valid {what}: it is nested too deeply.") from None
