"""The grammar a ``.pt2``'s shape expressions must fit before torch's ``sympify`` sees them.

torch writes symbolic sizes as sympy text (``Mul(Integer(2), Symbol('s77', positive=True,
integer=True))``) and evaluates that text when it loads a program. We read it first with our own
tokenizer and recursive-descent reader: integers, the size symbols the program declares,
``+ - * // %``, unary minus, parentheses, comparisons and the sympy classes torch writes. Anything
else is refused, so no other text reaches ``sympify``.
"""

from __future__ import annotations

import re
from typing import Any, Callable


class ProgramRefused(Exception):
    """Why a program is not plain data, in words (``safe_pt2`` names the file around it)."""


def quoted(text: str, limit: int = 60) -> str:
    shown = repr(text[:limit])
    return shown + ("…" if len(text) > limit else "")


MAX_EXPRESSION = 2000  # characters
MAX_DEPTH = 40
MAX_DIGITS = 20

# The sympy names torch writes (``sympy.srepr``) for the sizes of programs we have seen, and
# their arity (None: one or more). All are classes that only build expressions.
_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "Integer": (1, 1), "Add": (1, None), "Mul": (1, None), "Max": (1, None), "Min": (1, None),
    "FloorDiv": (2, 2), "Mod": (2, 2), "PythonMod": (2, 2), "CleanDiv": (2, 2), "CeilDiv": (2, 2),
    "Eq": (2, 2), "Ne": (2, 2), "Lt": (2, 2), "Le": (2, 2), "Gt": (2, 2), "Ge": (2, 2),
    "StrictLessThan": (2, 2), "LessThan": (2, 2), "StrictGreaterThan": (2, 2), "GreaterThan": (2, 2),
    "And": (1, None), "Or": (1, None), "Not": (1, 1),
}
_BOOLEANS = {"True", "False", "true", "false"}
# Assumptions a size symbol may carry: Symbol('s0', positive=True, integer=True).
_ASSUMPTIONS = {"integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite",
                "zero", "nonzero", "even", "odd"}
SYMBOL_NAME = re.compile(r"[a-z]{1,8}[0-9]{1,9}")

_TOKEN = re.compile(
    r" *(?:(?P<int>[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>'[A-Za-z0-9_]*'|\"[A-Za-z0-9_]*\")"
    r"|(?P<op>//|==|!=|<=|>=|[-+*%<>(),=]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip(" ")
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ProgramRefused(f"its shape expression {quoted(text)} holds {quoted(text[pos:].lstrip(' ')[:12])}, "
                                 "which is not plain size arithmetic")
        kind = match.lastgroup or "op"
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Expression:
    """A recursive-descent reader of one expression; it only accepts, it never evaluates."""

    def __init__(self, text: str, symbols: frozenset[str]) -> None:
        self.text = text
        self.symbols = symbols
        self.tokens = _tokens(text)
        self.pos = 0
        self.depth = 0

    def refuse(self, what: str) -> ProgramRefused:
        return ProgramRefused(f"its shape expression {quoted(self.text)} {what}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value) or (kind is not None and token[0] != kind):
            raise self.refuse("is not plain size arithmetic")
        self.pos += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "op" and token[1] in values

    def read(self) -> None:
        if not self.tokens:
            raise self.refuse("is empty")
        self.comparison()
        if self.peek() is not None:
            raise self.refuse("is not plain size arithmetic")

    def comparison(self) -> None:
        self.sum()
        if self.at("==", "!=", "<", "<=", ">", ">="):
            self.pos += 1
            self.sum()

    def sum(self) -> None:
        self.product()
        while self.at("+", "-"):
            self.pos += 1
            self.product()

    def product(self) -> None:
        self.unary()
        while self.at("*", "//", "%"):
            self.pos += 1
            self.unary()

    def unary(self) -> None:
        if self.at("-"):
            self.pos += 1
        self.nest(self.atom)

    def nest(self, read: Callable[[], None]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.refuse("is nested too deeply")
        read()
        self.depth -= 1

    def integer(self) -> None:
        _, digits = self.take(kind="int")
        if len(digits) > MAX_DIGITS:
            raise self.refuse("holds a number too large for a size")

    def atom(self) -> None:
        token = self.peek()
        if token is None:
            raise self.refuse("ends too early")
        kind, value = token
        if kind == "int":
            self.integer()
        elif kind == "op" and value == "(":
            self.pos += 1
            self.comparison()
            self.take(")")
        elif kind == "name" and value == "Symbol":
            self.pos += 1
            self.symbol()
        elif kind == "name" and value in _FUNCTIONS:
            self.pos += 1
            self.call(value)
        elif kind == "name" and (value in _BOOLEANS or value in self.symbols):
            self.pos += 1
        elif kind == "name":
            raise self.refuse(f"names {value!r}, which is neither a size symbol the program declares nor "
                              "an arithmetic function")
        else:
            raise self.refuse("is not plain size arithmetic")

    def symbol(self) -> None:
        self.take("(")
        _, quoted = self.take(kind="str")
        name = quoted[1:-1]
        if name not in self.symbols:
            raise self.refuse(f"names the symbol {name!r}, which the program does not declare")
        while self.at(","):
            self.pos += 1
            _, key = self.take(kind="name")
            if key not in _ASSUMPTIONS:
                raise self.refuse(f"gives a symbol the property {key!r}")
            self.take("=")
            _, flag = self.take(kind="name")
            if flag not in _BOOLEANS:
                raise self.refuse("gives a symbol a property that is not True or False")
        self.take(")")

    def call(self, name: str) -> None:
        low, high = _FUNCTIONS[name]
        self.take("(")
        count = 0
        if not self.at(")"):
            while True:
                if name == "Integer":
                    if self.at("-"):
                        self.pos += 1
                    self.integer()
                else:
                    self.nest(self.comparison)
                count += 1
                if not self.at(","):
                    break
                self.pos += 1
        self.take(")")
        if count < low or (high is not None and count > high):
            raise self.refuse(f"calls {name} with {count} arguments")


def check_expression(text: Any, symbols: frozenset[str] | set[str]) -> None:
    """Refuse ``text`` unless our grammar reads all of it as arithmetic on ``symbols``."""
    if not isinstance(text, str):
        raise ProgramRefused("a shape expression in it is not text")
    if len(text) > MAX_EXPRESSION:
        raise ProgramRefused(f"its shape expression {quoted(text)} is {len(text):,} characters long")
    _Expression(text, frozenset(symbols)).read()
