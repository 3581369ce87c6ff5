"""Task names as file names and module keys: safe, bounded, and never two for one.

A task's real name (a class name, an output name, a group the user typed) is kept in the
manifests; the file stem and the ModuleDict key are derived from it. Two names that would
share a file or a key are refused before any training starts.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Iterable

from kfstudio.core.errors import TaskError
from kfstudio.core.students.networks import module_key

MAX_STEM_BYTES = 64  # well under every file system's 255, with room for ".safetensors" and temp names
_KEEP = "-_."


def task_file_stem(task_name: str) -> str:
    """A portable file name for a task.

    Names of plain letters, digits, '-', '_' and '.' (up to 64 bytes) are used as they are;
    any other name is cleaned, shortened and given 8 hex digits of its hash, so that two
    different names never clean to the same stem ("a/b" vs "a_b")."""
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c in _KEEP else "_" for c in task_name).strip(".")
    if cleaned == task_name and 0 < len(cleaned.encode()) <= MAX_STEM_BYTES:
        return cleaned
    digest = hashlib.sha1(unicodedata.normalize("NFC", task_name).encode()).hexdigest()[:8]
    return f"{(cleaned or 'task')[:MAX_STEM_BYTES - 9]}-{digest}"


def check_task_names(names: Iterable[str]) -> None:
    """Refuse task names that would share a brick file (on any file system) or a module key."""
    seen_stems: dict[str, str] = {}
    seen_keys: dict[str, str] = {}
    for name in names:
        if not name.strip():
            raise TaskError("A task needs a name; an empty name cannot name its brick.")
        for seen, key in ((seen_stems, task_file_stem(name).casefold()), (seen_keys, module_key(name))):
            other = seen.setdefault(key, name)
            if other != name:
                raise TaskError(f"The task names '{other}' and '{name}' are too alike to be stored apart "
                                "(their brick files or keys would be the same); rename one of them.")
