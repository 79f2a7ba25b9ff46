"""Detection rules: thresholds, windows and the site's own names, from TOML.

The defaults live in ``default_rules.toml`` beside this module, which also
documents every key. A user's file is laid over them: it may leave keys out,
but a section or key the defaults do not have, or a value of another type,
is an error (``RulesError``), so that a typo never silently keeps a default.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from analysis.detect.alert import Severity
from analysis.detect.facts import parse_address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RulesError(ValueError):
    """A rules file that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Rule:
    enabled: bool
    severity: Severity
    threshold: int
    window_s: float
    min_ratio: float = 0.0
    limit: int = 0

    @property
    def window_ns(self) -> int:
        return int(self.window_s * 1_000_000_000)


@dataclass(frozen=True, slots=True)
class Local:
    """What belongs to the monitored site itself."""

    domains: frozenset[str]  # lower-case, without a trailing dot
    networks: tuple[Network, ...]
    server_names: frozenset[str]  # lower-case names and addresses

    def is_own_client(self, ip: str) -> bool:
        if not self.networks:
            return False
        address = parse_address(ip)
        if address is None:
            return False
        return any(address in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class Rules:
    local: Local
    rules: Mapping[str, Rule]  # kind -> rule, every kind of the defaults

    def rule(self, kind: str) -> Rule:
        return self.rules[kind]

    def enabled(self, kind: str) -> bool:
        return self.rules[kind].enabled


def default_rules() -> Rules:
    return _build(_defaults(), {}, "defaults")


MAX_RULES_BYTES = 1 << 20
# Windows beyond ten years are a typo, and float seconds must stay finite.
MAX_WINDOW_S = 10 * 365 * 86400


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """The defaults with the settings of the TOML file at ``path`` laid over."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            # Read at most a little past the cap: /dev/zero or a FIFO that
            # never ends must not fill memory.
            raw = handle.read(MAX_RULES_BYTES + 1)
    except OSError as exc:
        raise RulesError(f"cannot read {name}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_RULES_BYTES:
        raise RulesError(f"{name}: larger than {MAX_RULES_BYTES} bytes")
    try:
        user = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RulesError(f"{name}: not a text file (TOML is UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{name}: not valid TOML: {exc}") from exc
    except RecursionError:
        # tomllib recurses once per array or inline table inside another:
        # a few hundred brackets (1 KB) exhaust the stack. No rules key
        # nests deeper than a list of strings, so no real file gets here.
        raise RulesError(
            f"{name}: nested too deeply (arrays or inline tables within each other)"
        ) from None
    return _build(_defaults(), user, name)


def default_rules_text() -> str:
    """The defaults file as shipped: every key, documented."""
    return resources.files(__package__).joinpath("default_rules.toml").read_text()


# Cached: each AlertEngine without rules of its own asks (a run makes two,
# the spool's and the judge's), and tomllib is slow. Read only: _merge
# copies the sections it changes.
@functools.cache
def _defaults() -> dict[str, Any]:
    return tomllib.loads(default_rules_text())


def _build(defaults: dict[str, Any], user: dict[str, Any], name: str) -> Rules:
    merged = _merge(defaults, user, name)
    local = merged.pop("local")
    rules = {
        kind: _rule(settings, f"{name}: [{kind}]") for kind, settings in merged.items()
    }
    return Rules(_local(local, f"{name}: [local]"), rules)


def _merge(defaults: dict[str, Any], user: dict[str, Any], name: str) -> dict[str, Any]:
    merged = {section: dict(values) for section, values in defaults.items()}
    for section, values in user.items():
        if section not in defaults:
            raise RulesError(f"{name}: unknown section [{section}]")
        if not isinstance(values, dict):
            raise RulesError(f"{name}: {section} must be a [section]")
        for key, value in values.items():
            if key not in defaults[section]:
                raise RulesError(f"{name}: [{section}] has no key {key!r}")
            _check_type(value, defaults[section][key], f"{name}: [{section}] {key}")
            merged[section][key] = value
    return merged


def _check_type(value: Any, default: Any, where: str) -> None:
    # A float key accepts an int (window_s = 60); bool is not taken for int.
    expected: tuple[type, ...] = (type(default),)
    if isinstance(default, float) or where.endswith("window_s"):
        expected = (float, int)  # seconds may be fractional
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(
        value, expected
    ):
        raise RulesError(f"{where}: expected {type(default).__name__}, got {value!r}")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where}: expected a list of strings")


def _rule(settings: dict[str, Any], where: str) -> Rule:
    try:
        severity = Severity(settings["severity"])
    except ValueError:
        choices = ", ".join(s.value for s in Severity)
        raise RulesError(f"{where} severity: one of {choices}") from None
    rule = Rule(
        enabled=settings["enabled"],
        severity=severity,
        threshold=settings["threshold"],
        window_s=float(settings["window_s"]),
        min_ratio=float(settings.get("min_ratio", 0.0)),
        limit=settings.get("limit", 0),
    )
    # Name the key that is out of range, and its value, rather than list
    # every bound: "threshold = 0" should not send the reader looking at
    # window_s.
    bounds = (
        ("threshold", rule.threshold >= 1, "at least 1"),
        (
            "window_s",
            0 < rule.window_s <= MAX_WINDOW_S,
            f"above 0, at most {MAX_WINDOW_S}",
        ),
        ("min_ratio", 0 <= rule.min_ratio <= 1, "0 to 1"),
        ("limit", rule.limit >= 0, "0 or more"),
    )
    for key, within, wanted in bounds:
        if not within:
            raise RulesError(
                f"{where} {key}: {settings[key]!r} is out of range ({wanted})"
            )
    return rule


def _local(settings: dict[str, Any], where: str) -> Local:
    networks = []
    for text in settings["networks"]:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise RulesError(f"{where} networks: {text!r} is not a network") from None
    return Local(
        domains=frozenset(d.lower().rstrip(".") for d in settings["domains"]),
        networks=tuple(networks),
        server_names=frozenset(n.lower().rstrip(".") for n in settings["server_names"]),
    )
