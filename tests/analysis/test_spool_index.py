"""What the spool keeps in memory of every session: its index and the
cross-session check's ledger.

Both are built a session at a time and merged across worker parts; they
must give exactly what sorting all sessions and ``downgrade.find`` over all
their columns give.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from analysis import downgrade, pipeline
from analysis.records import SessionRecord, SessionResult
from analysis.spool import Spool, _Index

STRIPPING = str(Path(__file__).parents[2] / "pcaps" / "stripping.pcap")


def _results() -> list[SessionResult]:
    return list(pipeline.analyze([STRIPPING]))


def _at(result: SessionResult, start: int, session_id: str) -> SessionResult:
    session = dataclasses.replace(result.session, start=start, session_id=session_id)
    return dataclasses.replace(result, session=session)


def test_sessions_starting_together_are_ordered_by_id_then_arrival() -> None:
    index = _Index()
    for start, sid in [(5, "Sb"), (3, "Sz"), (5, "Sa"), (5, "Sb"), (1, "Sy")]:
        index.append(start, sid, 0, 0, 1)
    assert list(index.order()) == [4, 1, 2, 0, 3]


def test_ids_sort_as_text_whatever_their_characters() -> None:
    # UTF-8 bytes order as code points do; a lone surrogate still encodes.
    ids = ["S\u00e9", "Sz", "S\U0001f600", "S\ud800", "S"]
    index = _Index()
    for sid in ids:
        index.append(7, sid, 0, 0, 1)
    assert [ids[i] for i in index.order()] == sorted(ids)
    assert index.session_id(2) == "S\U0001f600".encode()


def test_a_start_beyond_64_bits_is_kept_and_ordered() -> None:
    # pcapng allows timestamps that no 64-bit nanosecond count holds.
    huge = 1 << 80
    index = _Index()
    index.append(huge, "Sa", 0, 0, 1)
    index.append(2, "Sb", 0, 1, 1)
    other = _Index()
    other.append(huge + 1, "Sc", 0, 0, 1)
    other.append(1, "Sd", 0, 1, 1)
    index.extend(other, 1)
    assert list(index.starts) == [huge, 2, huge + 1, 1]
    assert list(index.order()) == [3, 1, 0, 2]
    assert list(index.parts) == [0, 0, 1, 1]
    assert index.session_id(3) == b"Sd"


def test_a_huge_start_goes_through_the_spool() -> None:
    first, *_ = _results()
    with Spool() as spool:
        spool.add(_at(first, 1 << 70, "Sb"))
        spool.add(_at(first, 10, "Sa"))
        assert [r.start for r in spool.replay()] == [10, 1 << 70]


def _columns(sessions: list[SessionRecord]) -> dict[str, list[object]]:
    names = [f.name for f in dataclasses.fields(SessionRecord)]
    return {name: [getattr(s, name) for s in sessions] for name in names}


def _describe(sessions: list[SessionRecord]) -> downgrade.Describe:
    return lambda i: (sessions[i].session_id, sessions[i].start)


def test_the_ledger_finds_what_find_finds_over_all_columns() -> None:
    sessions = [r.session for r in _results()]
    ledger = downgrade.Ledger()
    for position, session in enumerate(sessions):
        ledger.add(position, session)
    found = ledger.find(_describe(sessions))
    assert found == downgrade.find(_columns(sessions))
    assert [(p, a.detail) for p, a in found] == [
        (
            1,
            "EHLO keyword 'XXXXXXXA' looks overwritten "
            "(STARTTLS removed on the path?)",
        ),
        (2, "EHLO reply without STARTTLS; 1 other session(s) to 127.0.0.1:25 "
         "were offered it"),
    ]  # fmt: skip
    # Only the sessions find may flag are kept, with a count per server.
    assert [position for position, _ in ledger.suspects] == [2, 1]
    assert ledger.offers(len(ledger)) == {("127.0.0.1", 25): 1}


def test_what_an_append_cut_short_left_is_dropped_by_the_next() -> None:
    index = _Index()
    index.append(1, "Sa", 0, 0, 10)
    # An append stopped after three of its steps (Ctrl-C between lines).
    index.starts.append(2)
    index.parts.append(0)
    index.offsets.append(10)
    assert len(index) == 1 and list(index.order()) == [0]
    other = _Index()
    other.extend(index, 3)  # only the whole session crosses
    assert (list(other.starts), list(other.parts), other.session_id(0)) == (
        [1],
        [3],
        b"Sa",
    )
    index.append(3, "Sc", 0, 20, 5)
    assert list(index.starts) == [1, 3]
    assert list(index.offsets) == [0, 20]
    assert [index.session_id(i) for i in range(2)] == [b"Sa", b"Sc"]


def test_a_ledger_counts_only_the_sessions_its_owner_counts() -> None:
    offered, mangled, stripped = (r.session for r in _results())
    describe = _describe([offered, stripped, mangled])
    ledger = downgrade.Ledger()
    ledger.add(0, offered)
    ledger.add(1, stripped)
    ledger.add(2, offered)  # as if the index never took it in
    assert [(p, a.detail) for p, a in ledger.find(describe, 2)] == [
        (1, "EHLO reply without STARTTLS; 1 other session(s) to 127.0.0.1:25 "
         "were offered it"),
    ]  # fmt: skip
    assert ledger.offers(2) == {("127.0.0.1", 25): 1}
    # The next add at position 2 replaces what the cut-short one left.
    ledger.add(2, mangled)
    assert ledger.offers(3) == {("127.0.0.1", 25): 1}
    ledger.add(3, offered)
    ledger.add(4, offered)
    assert ledger.offers(5) == {("127.0.0.1", 25): 3}
    found = ledger.find(describe)
    assert [(p, a.session_id) for p, a in found] == [
        (1, stripped.session_id),
        (2, mangled.session_id),
    ]
    assert "; 3 other session(s)" in found[0][1].detail


def test_a_merge_cut_short_is_dropped_by_the_next_merge() -> None:
    offered, _, stripped = (r.session for r in _results())
    part = downgrade.Ledger()
    part.add(0, offered)
    merged = downgrade.Ledger()
    merged.add(0, stripped)
    merged.merge(part, 1, 1)  # as if the index never took the part in
    retried = downgrade.Ledger()
    retried.add(0, stripped)
    merged.merge(retried, 1, 1)
    assert merged.offers(2) == {}
    assert merged.find(_describe([stripped, stripped])) == []


def test_servers_are_packed_and_given_back_as_they_were() -> None:
    for ip, port, size in [
        ("192.0.2.25", 25, 7),
        ("2001:db8::25", 587, 19),
        ("::ffff:192.0.2.1", 25, 19),
        # Not as inet_ntop would write them: kept as text.
        ("2001:DB8::25", 25, 16),
        ("192.0.2.025", 25, 15),
        ("no address", 70000, 17),
    ]:
        key = downgrade.server_key(ip, port)
        assert (len(key), downgrade.server_of(key)) == (size, (ip, port))
    assert downgrade.server_key("192.0.2.25", 25) != downgrade.server_key(
        "192.0.2.25", 26
    )


def test_suspects_are_packed_and_given_back_as_added() -> None:
    # Objects took about 250 bytes a session, arrays with the session's id
    # and start about 45: 150,000 sessions to as many servers without
    # STARTTLS held 48 MB (found in review). A record is now 12 bytes.
    import pickle

    suspects = downgrade._Suspects()
    added = [
        (0, downgrade.server_key("192.0.2.1", 25)),
        (3, b"m" + "XXXXXXXé".encode()),
        (7, b"m" + b"X" * 300),
        (2**32 - 1, b""),
    ]
    for row in added:
        suspects.append(*row)
    assert suspects.size == 12 + 15 + 310 + 5
    assert list(suspects) == added[::-1]
    assert list(pickle.loads(pickle.dumps(suspects))) == added[::-1]  # -j N
    suspects.drop_from(4)
    assert list(suspects) == added[1::-1]
    suspects.append(*added[2])
    assert list(suspects) == [added[2], *added[1::-1]]
    assert len(suspects) == 3
