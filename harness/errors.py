"""User-facing errors.

Everything a user can get wrong (a name, a file, a line, an option) raises `HarnessError` with a
message that says what to change. The CLI prints the message and exits with status 2 instead of
showing a traceback from deep inside a library.
"""
from __future__ import annotations

import difflib
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
