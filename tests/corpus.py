"""The public capture corpus beside the checkout, for the tests that read it.

The corpus lives in ``../shared/pcaps/public`` next to the repository, or
where ``SMTPSCOPE_CORPUS`` says (see its README): captures from other
analyzers' test suites, their expected outputs and ``MANIFEST.tsv``. Tests
read it in place and never copy it into the project. Where it is absent,
``require_corpus`` skips the test, except under CI (``in_ci``): there the
corpus must be present, so its absence fails.

Each capture is analysed at most once per test run (``tables``), on the
default SMTP ports plus any port its manifest tags name (``port_1224``).
"""

from __future__ import annotations

import csv
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from analysis import SmtpTables, read_captures
from analysis.pipeline import DEFAULT_PORTS

# SMTPSCOPE_CORPUS names it for a checkout that is not beside it.
_BESIDE = Path(__file__).parents[1] / ".." / "shared" / "pcaps" / "public"
CORPUS = Path(os.environ.get("SMTPSCOPE_CORPUS") or _BESIDE).resolve()
MANIFEST = CORPUS / "MANIFEST.tsv"

# Short names of the source repositories, for readable test ids.
_SOURCES = {
    "OISF__suricata-verify": "suricata",
    "arkime__arkime": "arkime",
    "ntop__nDPI": "ndpi",
    "seladb__PcapPlusPlus": "pcapplusplus",
    "zeek__zeek": "zeek",
}
# Path prefixes that every capture of a source repeats.
_NOISE = re.compile(
    r"^(tests__pcap__|tests__cfgs__default__pcap__|tests__"
    r"|testing__btest__Traces__|Tests__Packet\+\+Test__PacketExamples__)"
)
_PORT_TAG = re.compile(r"^port_(\d+)$")


@dataclass(frozen=True, slots=True)
class Capture:
    """One row of MANIFEST.tsv."""

    path: str  # relative to CORPUS
    smtp_sessions: int  # as counted by tshark 4.0
    features: tuple[str, ...]
    expected: tuple[str, ...]  # expected-output files, relative to CORPUS

    @property
    def file(self) -> Path:
        return CORPUS / self.path

    @property
    def id(self) -> str:
        """``source/name`` with the prefixes every capture repeats removed."""
        folder, _, name = self.path.partition("/")
        short = _NOISE.sub("", name).replace("firewall__ruletype-", "", 1)
        return f"{_SOURCES.get(folder, folder)}/{short}"

    @property
    def ports(self) -> frozenset[int]:
        """The default SMTP ports and any other port the manifest names."""
        extra = {int(m[1]) for tag in self.features if (m := _PORT_TAG.match(tag))}
        return DEFAULT_PORTS | extra

    def expected_files(self, suffix: str) -> list[Path]:
        return [CORPUS / name for name in self.expected if name.endswith(suffix)]


def _load_manifest() -> dict[str, Capture]:
    if not MANIFEST.is_file():
        return {}
    captures: dict[str, Capture] = {}
    with MANIFEST.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            capture = Capture(
                path=row["path"],
                smtp_sessions=int(row["smtp_sessions"]),
                features=tuple(filter(None, row["features"].split(","))),
                expected=tuple(filter(None, row["expected_outputs"].split(";"))),
            )
            if capture.id in captures:
                raise ValueError(f"two captures share the test id {capture.id}")
            captures[capture.id] = capture
    return captures


CAPTURES: dict[str, Capture] = _load_manifest()


def in_ci() -> bool:
    """Whether the tests run under CI: ``CI`` set to true (as CI services
    and ``.ci/run`` set it), 1 or yes. ``CI=false`` is not CI (found by a
    new user: any value at all counted)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_corpus() -> None:
    """Skip the calling test without the corpus, or fail it under CI."""
    if MANIFEST.is_file():
        return
    if in_ci():
        pytest.fail(f"public capture corpus missing at {CORPUS} (CI is set)")
    pytest.skip(
        f"public capture corpus not found at {CORPUS}; "
        "SMTPSCOPE_CORPUS names another folder"
    )


def or_missing(params: list[Any], arity: int) -> list[Any]:
    """``params``, or one stand-in case when there is no corpus to list.

    The stand-in passes None for every argument; the test's first call to
    ``tables`` then skips it with the reason, or fails it under CI, instead
    of pytest reporting an empty parameter set.
    """
    if CAPTURES:
        return params
    return [pytest.param(*([None] * arity), id="corpus-missing")]


def capture(capture_id: str) -> Capture:
    require_corpus()
    return CAPTURES[capture_id]


@functools.cache
def tables(capture_id: str) -> SmtpTables:
    """The capture's four tables, analysed once per test run."""
    found = capture(capture_id)
    return read_captures(found.file, found.ports)
