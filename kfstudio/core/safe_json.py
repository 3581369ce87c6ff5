"""JSON from files we did not write: parsed with a bound on how deeply lists and tables nest.

``json.loads`` of ``[[[[...]]]]`` 5 000 levels deep raises RecursionError, which no loader
expects, and a few hundred levels pass the parser only to exhaust the stack of whatever walks
the result. No KF Studio file nests deeper than a dozen levels.
"""

from __future__ import annotations

import json

MAX_DEPTH = 64


class JsonTooDeep(ValueError):
    """A JSON text nests deeper than ``MAX_DEPTH`` (a ValueError, as any other bad JSON is)."""


def _depth(obj) -> int:
    """How deeply ``obj`` nests, walked without recursion; stops counting past MAX_DEPTH."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def loads(text: str | bytes):
    """``json.loads``, refusing (JsonTooDeep) anything nested more than MAX_DEPTH levels."""
    try:
        obj = json.loads(text)
    except RecursionError:
        obj = None
    else:
        if _depth(obj) <= MAX_DEPTH:
            return obj
    raise JsonTooDeep(f"it nests lists or tables more than {MAX_DEPTH} levels deep (KF Studio files never do)")
