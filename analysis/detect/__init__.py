"""Detecting abuse in finished SMTP sessions: alerts with their evidence.

``detect`` runs every detector over an offline run's sessions and returns
``Alert`` records, the rows of the ``alerts`` table; ``AlertEngine`` does
the same one session at a time. Rules (thresholds, windows, the site's own
domains and networks) come from ``default_rules.toml`` or a user's file
through ``load_rules``.
"""

from __future__ import annotations

from analysis.detect.alert import Alert, Severity
from analysis.detect.engine import AlertEngine, detect
from analysis.detect.rules import Rules, RulesError, default_rules, load_rules

__all__ = [
    "Alert",
    "AlertEngine",
    "Rules",
    "RulesError",
    "Severity",
    "default_rules",
    "detect",
    "load_rules",
]
