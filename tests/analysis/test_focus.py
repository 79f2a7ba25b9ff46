"""Picking sessions by id or prefix (``analysis.focus``)."""

from __future__ import annotations

from analysis.detect import Alert
from analysis.focus import Ambiguous, Picks, resolve
from tests.analysis.table_samples import hostile_session


def test_resolve_matches_whole_ids_and_prefixes() -> None:
    ids = ["Sab1", "Sab2", "Sc", "Sab1", "Sd"]
    resolved = resolve(["Sab1", "Sc", "Sab", "Sx", "Sc"], ids)
    assert resolved.chosen == frozenset({"Sab1", "Sc"})
    assert resolved.unknown == ("Sx",)
    assert resolved.ambiguous == (Ambiguous("Sab", ("Sab1", "Sab2"), 3),)
    # The same id twice (a capture read twice) is no ambiguity.
    assert resolve(["Sa"], ["Sab1", "Sab1"]).chosen == frozenset({"Sab1"})


def test_picks_keep_the_chosen_sessions_and_their_alerts() -> None:
    def alert(alert_id: str, first: int, *sessions: str) -> Alert:
        return Alert(
            alert_id, "k", "low", None, None, first, first, 1, 1, None, None,
            len(sessions), sessions, (), "s",
        )  # fmt: skip

    picks = Picks(frozenset({"s-a"}))
    picks.add(hostile_session())
    for late in (alert("A2", 2, "s-b", "s-a"), alert("A1", 1, "s-a"), alert("A3", 0)):
        picks.add_alert(late)
    assert [r.session.session_id for r in picks.sessions] == ["s-a"]
    assert [a.alert_id for a in picks.alerts_of("s-a")] == ["A1", "A2"]


def test_the_spool_lists_its_ids_in_the_order_added() -> None:
    from analysis.spool import Spool
    from tests.analysis.table_samples import twin_session

    with Spool() as spool:
        spool.add(twin_session())
        spool.add(hostile_session())
        assert list(spool.session_ids()) == ["s-0", "s-a"]


def test_an_ambiguous_prefix_names_the_ids_that_sort_first_in_any_order() -> None:
    # The spool's index holds the ids in an order that differs with -j:
    # the ids named must not.
    ids = ["Sg", "Sf", "Se", "Sd", "Sc", "Sb", "Sa", "Sb"]
    expected = (Ambiguous("S", ("Sa", "Sb", "Sc", "Sd", "Se"), 8),)
    assert resolve(["S"], ids).ambiguous == expected
    assert resolve(["S"], reversed(ids)).ambiguous == expected
