"""The one exception type every data loader raises for a user-facing problem."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad, missing or unreadable data.

    The message names the path or value at fault, what was expected and how to fix it;
    the CLI prints it as ``error: ...`` without a traceback.
    """
