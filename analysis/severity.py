"""How each alert severity is styled on the terminal, wherever alerts are
shown (the report's alert table and summary, a session's own alerts)."""

from __future__ import annotations

from analysis.detect import Severity

SEVERITY_STYLE: dict[Severity, str] = {
    Severity.CRITICAL: "bold red",
    Severity.HIGH: "red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
