"""Errors that tell the user what was wrong and what to pass instead.

Every error recagent raises on bad input derives from :class:`RecAgentError`; the CLI prints
its message and hint without a traceback, the HTTP server maps it to a 4xx answer.
"""

from __future__ import annotations

__all__ = [
    "RecAgentError",
    "DataError",
    "UnknownIdError",
    "ModelPathError",
    "ConfigError",
    "EmptyInputError",
]


class RecAgentError(Exception):
    """Base class: ``message`` says what was wrong, ``hint`` what to do instead."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, hint: str | None = None, param: str | None = None):
        self.message = message
        self.hint = hint
        self.param = param
        super().__init__(message if hint is None else f"{message} Hint: {hint}")


class DataError(RecAgentError):
    """A data file is missing, malformed or inconsistent; names the file, row and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        self.file, self.row, self.column = file, row, column
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message, hint=hint, param=column)


class UnknownIdError(RecAgentError, KeyError):
    """A user or item id that the data does not contain."""

    status_code = 404
    error_type = "not_found_error"

    def __init__(self, kind: str, ids, hint: str | None = None):
        ids = list(ids)
        shown = ", ".join(repr(i) for i in ids[:5]) + (" ..." if len(ids) > 5 else "")
        self.kind, self.ids = kind, ids
        super().__init__(
            f"unknown {kind} id{'s' if len(ids) > 1 else ''}: {shown}",
            hint=hint or f"pass {kind} ids that exist in the loaded data",
            param=f"{kind}_id",
        )

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return Exception.__str__(self)


class ModelPathError(RecAgentError):
    """A model, adapter or index path that does not exist or is not usable."""


class ConfigError(RecAgentError):
    """A configuration value that cannot work (unknown option, impossible combination)."""


class EmptyInputError(RecAgentError):
    """An input list that must not be empty was empty (history, candidates, catalog)."""
