"""User-facing errors.

Everything a user can get wrong (a name, a file, a line, an option) raises `HarnessError` with a
message that says what to change. The CLI prints the message and exits with status 2 instead of
showing a traceback from deep inside a library.
"""
from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class HarnessError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> HarnessError:
    """Build the error for an unknown `kind` called `name`, listing valid names and close matches."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return HarnessError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")


class ConfigurationError(HarnessError):
    """A combination of options that cannot run at all (e.g. a closed-set head under an
    open-set protocol), found only once the method is built. Unlike a job's other failures,
    which are recorded and let the run go on, it stops the invocation: every job with that
    configuration would fail the same way."""


#: What to do about the OS errors a user can fix (the rest: check the folder named).
_OS_ERROR_HINTS = {errno.ENOSPC: "the disk is full: free space", errno.EDQUOT: "over the disk quota: free space",
                   errno.EROFS: "the file system is read-only: use another --out",
                   errno.EACCES: "permission denied: use another --out or fix its permissions"}


def os_error_hint(err: OSError, default: str = "check the results folder") -> str:
    """`cannot write X (No space left on device): <this>`: what the user can do about `err`."""
    return _OS_ERROR_HINTS.get(err.errno, default)
