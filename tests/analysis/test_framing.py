"""DataBody: the end of a message and its smuggling shapes, however split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.smtp.framing import DataBody

PIECES = st.sampled_from([b".", b"a", b"\r\n", b"\n", b"\r", b"..", b"X"])


def _feed(wire: bytes, cuts: list[int]) -> tuple[object, ...]:
    body = DataBody(strict=True)
    start = 0
    for cut in [*cuts, len(wire)]:
        if cut <= start:
            continue
        end = body.feed(wire[start:cut], 0)
        if end >= 0:
            return (
                start + end,
                body.size,
                body.bare_lf_dot_lines,
                (body.cut_at_bare_lf_end()),
            )
        start = cut
    return -1, body.size, body.bare_lf_dot_lines, body.cut_at_bare_lf_end()


@settings(max_examples=1500, deadline=None)
@given(st.lists(PIECES, max_size=14), st.data())
def test_any_segmentation_gives_the_same_end_size_and_smuggling_shapes(
    pieces: list[bytes], data: st.DataObject
) -> None:
    # Where the sender splits its segments must not hide a bare-LF dot line
    # (a smuggler chooses the splits) nor change the message size.
    wire = b"Subject: a\r\n" + b"".join(pieces) + b"\r\n.\r\nQUIT\r\n"
    offsets = st.integers(1, len(wire) - 1)
    cuts = sorted(data.draw(st.lists(offsets, max_size=6, unique=True)))
    assert _feed(wire, cuts) == _feed(wire, [])


def test_bare_lf_dot_split_after_the_lf_is_still_seen() -> None:
    wire = b"Subject: s\r\n\r\nhate\n.\n\r\nQUIT\r\n"
    cut = wire.index(b".\n")
    assert _feed(wire, [cut])[2:] == _feed(wire, [])[2:]
    assert _feed(wire, [])[2] == 1


def test_empty_message_split_after_dot_cr_ends() -> None:
    assert _feed(b".\r\nQUIT\r\n", [2]) == (3, 0, 0, None)


def test_a_bare_lf_first_line_does_not_make_the_body_lenient() -> None:
    # The first line is the sender's to choose: a smuggler would start with
    # a bare LF to be read leniently. The CRLF end still ends the message.
    wire = b"x\nMAIL FROM:<a@b>\n.\r\nRCPT TO:<c@d>\r\n.\r\n"
    end, _size, bare, cut = _feed(wire, [])
    assert end == len(wire)
    assert bare == 1 and cut is not None
