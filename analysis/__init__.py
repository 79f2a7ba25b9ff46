"""SMTP meaning for TCP byte streams: parser, records, tables, views and CLI.

``read_captures``, ``load_tables`` and ``SmtpTables`` are re-exported here
lazily: importing the sans-IO parser (``analysis.smtp``) must not pull in
pandas.
"""

from __future__ import annotations

import logging

# As in capture: the command sets up logging (-v); a library caller may.
logging.getLogger(__name__).addHandler(logging.NullHandler())

# Not typing's: importing typing takes about 2 ms, and the command holds
# Ctrl-C only once this package is imported (analysis.launch). mypy takes
# any constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from analysis.load import load_tables
    from analysis.tables import SmtpTables, read_captures

__all__ = ["SmtpTables", "load_tables", "read_captures"]


def __getattr__(name: str) -> Any:
    if name == "load_tables":
        from analysis import load

        return load.load_tables
    if name in __all__:
        from analysis import tables

        return getattr(tables, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
