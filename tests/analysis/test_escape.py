from __future__ import annotations

import io
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from analysis.escape import csv_cell, escape_controls, plugin_text, terminal_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\r\nb\tc\x00", "a\\x0d\\x0ab\\x09c\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1 \x9b31m", "c1 \\x9b31m"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("iso\u2066late\u2069", "iso\\u2066late\\u2069"),
        ("line\u2028sep", "line\\u2028sep"),
        ("bom\ufeff", "bom\\ufeff"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("lone \udcff", "lone \\udcff"),
        ("grüße 日本 ✉", "grüße 日本 ✉"),
    ],
)
def test_escape_controls(raw: str, shown: str) -> None:
    assert escape_controls(raw) == shown


def test_every_ascii_character() -> None:
    # Printable ASCII is kept as it is; every other ASCII character escaped.
    for code in range(128):
        char = chr(code)
        shown = char if 0x20 <= code <= 0x7E else f"\\x{code:02x}"
        assert escape_controls(f"a{char}b") == f"a{shown}b", code


@given(st.text())
def test_escaped_text_has_no_control_characters(raw: str) -> None:
    escaped = escape_controls(raw)
    categories = {unicodedata.category(c) for c in escaped}
    assert not categories & {"Cc", "Cf", "Zl", "Zp", "Cs"}


def render(value: str) -> str:
    console = Console(file=io.StringIO(), record=True, width=80, color_system=None)
    console.print(terminal_text(value))
    return console.export_text()


def test_terminal_text_shows_markup_and_emoji_codes_literally() -> None:
    assert render("[bold]x[/bold] :smile:") == "[bold]x[/bold] :smile:\n"


def test_terminal_text_escapes_esc() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True)
    console.print(terminal_text("\x1b[31mred"))
    written = out.getvalue()
    assert "\x1b[31m" not in written
    assert "\\x1b[31mred" in written


def test_terminal_text_marks_missing_values() -> None:
    text = terminal_text(None, missing="-")
    assert text.plain == "-"
    assert str(text.style) == "dim"


@pytest.mark.parametrize(
    ("raw", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=x", "\\x09=x"),
        ("\r=x", "\\x0d=x"),
        ("a=b", "a=b"),
        ("alice@example.org", "alice@example.org"),
        ("", ""),
    ],
)
def test_csv_cell(raw: str, cell: str) -> None:
    assert csv_cell(raw) == cell


def test_plugin_text_leaves_one_line_and_no_perfdata_separator() -> None:
    assert plugin_text("a|b\nc\x1b[0m") == "a\\x7cb\\x0ac\\x1b[0m"
    assert plugin_text("mail.pcap") == "mail.pcap"
