"""User-facing errors: one line naming the file, the field and the fix."""

from __future__ import annotations

from pathlib import Path


class EmflowError(ValueError):
    """Bad input from the user (config, dataset, question file, missing asset).

    The CLI prints ``str(err)`` alone, without a traceback, and exits 1.
    """


def user_error(source: str | Path, field: str | None, problem: str, fix: str | None = None) -> EmflowError:
    """Build the one-line message ``<source>: <field>: <problem> (fix: <fix>)``."""
    parts = [str(source)]
    if field:
        parts.append(str(field))
    msg = ": ".join(parts) + f": {problem}"
    if fix:
        msg += f" (fix: {fix})"
    return EmflowError(msg.replace("\n", " "))
