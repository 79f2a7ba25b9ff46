"""Make strings from the wire safe to show in a terminal or a spreadsheet.

Anything an SMTP peer sent (HELO names, addresses, reply texts, headers) may
hold bytes meant to attack whoever reads it: ANSI escape sequences that
rewrite the terminal, bidi overrides that reorder what is shown, rich markup
that restyles the output, or spreadsheet formulas. Every view passes such
strings through this module first. A monitoring plugin's status line
(``smtpscope check``) is one more place where they, and file names,
end up.

The escaping is for display and is lossy in one way: a backslash is not
doubled, so a literal ``\\x1b`` sent by a peer looks the same as an escaped
ESC byte. The JSON Lines and Parquet exports keep control characters as
they are. They are not byte for byte either: wire text is decoded as UTF-8
before any of this, and a byte that is not UTF-8 becomes ``\\xNN`` there
too (``analysis.smtp.syntax.wire_text``), as Zeek writes it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

# Cc: C0 controls, DEL and C1 controls (ESC and CSI among them).
# Cf: invisible format characters, the bidi overrides and isolates among them.
# Zl, Zp: line and paragraph separators, which break a line like LF.
# Cs: lone surrogates, which cannot be encoded for output at all.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})

# Printable ASCII is always safe; only other characters need a closer look.
_CANDIDATE = re.compile(r"[^\x20-\x7e]")

# OWASP's list of first characters that make a spreadsheet evaluate a cell.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@functools.lru_cache(maxsize=4096)
def _escape_char(char: str) -> str:
    if unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_controls(value: str) -> str:
    """Replace control, format and separator characters with escapes.

    ESC becomes ``\\x1b``, LF ``\\x0a``, U+202E ``\\u202e``. Printable text in
    any script is left alone.
    """
    if value.isascii() and value.isprintable():
        # Printable ASCII, the usual text, holds nothing to escape: two
        # checks in C answer that sooner than the regular expression.
        return value
    return _CANDIDATE.sub(lambda match: _escape_char(match.group()), value)


def terminal_text(value: str | None, missing: str = "") -> Text:
    """A rich ``Text`` that shows ``value`` literally.

    A ``Text`` is never parsed for markup or emoji codes, so ``[bold]`` and
    ``:smile:`` from the wire are shown as typed.
    """
    # Imported here: the detectors use this module, and a run that prints
    # nothing should not load rich.
    from rich.text import Text

    if value is None:
        return Text(missing, style="dim")
    return Text(escape_controls(value))


def csv_cell(value: str) -> str:
    """``value`` escaped for a CSV cell that a spreadsheet may open.

    Control characters are escaped first, so a leading TAB or CR can no
    longer start a formula; a cell that still starts with a formula character
    gets a leading single quote, which spreadsheets show as text.
    """
    escaped = escape_controls(value)
    if escaped.startswith(_FORMULA_START):
        return "'" + escaped
    return escaped


def plugin_text(value: str) -> str:
    """``value`` escaped for the text of a monitoring plugin's status line.

    Nagios and its kin read the first line a plugin prints and take what
    follows its first ``|`` as performance data, so a line break or a ``|``
    in a file name would cut the text short and forge data. Control
    characters are escaped as everywhere; ``|`` becomes ``\\x7c``, the form
    those escapes take, so the plugin's own ``|`` is the only one left.
    """
    return escape_controls(value).replace("|", "\\x7c")
