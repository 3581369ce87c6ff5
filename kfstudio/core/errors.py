"""Errors a user can read.

Every problem caused by the user's input (a file, a flag, a shape) is raised as a subclass
of ``KFError`` whose message is one plain sentence a non-expert understands. The CLI prints
it as one line and the studio shows it in a dialog; neither shows a traceback for these.
"""


class KFError(Exception):
    """A problem with the user's input, explained in words."""


class TeacherError(KFError):
    """The teacher could not be loaded or run."""


class DataError(KFError):
    """The data could not be read or does not fit the teacher."""


class TaskError(KFError):
    """The task specification does not fit the teacher."""


class ConfigError(KFError):
    """A setting is out of range or unknown."""


class TrainingError(KFError):
    """The factorization could not go on (a NaN loss, out of memory)."""


class FileFormatError(KFError):
    """A KF Studio file is corrupt, truncated, or from a newer version."""


class WriteError(KFError):
    """A file could not be written (a full disk, no permission); nothing was left half-written."""

    @classmethod
    def of(cls, target, exc: OSError) -> "WriteError":
        reason = exc.strerror or str(exc)
        return cls(f"KF Studio could not write '{target}': {reason}. Nothing was left half-written; free some "
                   "space or choose another place, then try again.")


class BusyError(KFError):
    """Another process is writing the same folder; nothing was written."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    sentence for the user quotes of a library's error."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
