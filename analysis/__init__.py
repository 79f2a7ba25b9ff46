"""SMTP meaning for TCP byte streams: parser, records, tables, views and CLI.

``read_captures`` and ``SmtpTables`` are re-exported here lazily: importing
the sans-IO parser (``analysis.smtp``) must not pull in pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analysis.tables import SmtpTables, read_captures

__all__ = ["SmtpTables", "read_captures"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from analysis import tables

        return getattr(tables, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
