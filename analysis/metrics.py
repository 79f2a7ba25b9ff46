"""The monitor's totals in Prometheus text format, served over HTTP.

Written by hand rather than with prometheus_client: the format is a few
lines of text (Prometheus exposition format 0.0.4), and the live loop, not
a collector thread, decides when numbers change. The loop renders the page
on every tick and hands the finished text to ``MetricsServer``; the HTTP
thread only ever reads one immutable string, so the two threads share no
mutable state and need no lock.

Label values that came off the wire are limited to known SMTP verbs and
the anomaly kinds smtpscope defines, so a peer cannot create series.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
from collections.abc import Iterable, Sequence

from analysis.monitor import BUCKETS, Histogram, Monitor
from capture.live import InterfaceCounts

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_Sample = tuple[dict[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


class _Page:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, doc: str, samples: Iterable[_Sample]
    ) -> None:
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, doc: str, series: Iterable[tuple[dict[str, str], Histogram]]
    ) -> None:
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} histogram")
        for labels, h in series:
            running = 0
            bounds = [*(_number(b) for b in BUCKETS), "+Inf"]
            for bound, count in zip(bounds, h.counts, strict=True):
                running += count
                bucket = _labels({**labels, "le": bound})
                self.lines.append(f"{name}_bucket{bucket} {running}")
            self.lines.append(f"{name}_sum{_labels(labels)} {_number(h.total)}")
            self.lines.append(f"{name}_count{_labels(labels)} {h.observations}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def exposition(monitor: Monitor, interfaces: Sequence[InterfaceCounts] = ()) -> str:
    """The whole metrics page for the monitor and the capture counters."""
    m = monitor
    page = _Page()
    counter, gauge = "counter", "gauge"
    page.metric(
        "smtpscope_sessions_total", counter, "SMTP sessions closed", [({}, m.sessions)]
    )
    page.metric(
        "smtpscope_sessions_active",
        gauge,
        "SMTP sessions open now",
        [({}, m.active_sessions)],
    )
    page.metric(
        "smtpscope_transactions_total",
        counter,
        "mail transactions (MAIL commands) in closed sessions",
        [({}, m.transactions)],
    )
    page.metric(
        "smtpscope_messages_accepted_total",
        counter,
        "messages the server accepted",
        [({}, m.messages_accepted)],
    )
    page.metric(
        "smtpscope_replies_total",
        counter,
        "server replies by code class",
        [({"class": k}, v) for k, v in m.reply_classes.items()],
    )
    page.metric(
        "smtpscope_refusals_total",
        counter,
        "4xx and 5xx replies to MAIL, RCPT and message content",
        [({}, m.refusals)],
    )
    page.metric(
        "smtpscope_refusable_replies_total",
        counter,
        "all replies to MAIL, RCPT and message content",
        [({}, m.refusable)],
    )
    page.metric(
        "smtpscope_auth_results_total",
        counter,
        "sessions by the outcome of the AUTH their row tells of",
        [({"result": k}, v) for k, v in m.auth_results.items()],
    )
    page.metric(
        "smtpscope_auth_failures_total",
        counter,
        "AUTH commands refused for their credentials (535)",
        [({}, m.auth_failures)],
    )
    page.metric(
        "smtpscope_auth_other_refusals_total",
        counter,
        "AUTH commands refused for another reason than their credentials",
        [({}, m.auth_other_refusals)],
    )
    page.metric(
        "smtpscope_auth_successes_total",
        counter,
        "AUTH commands accepted",
        [({}, m.auth_successes)],
    )
    page.metric(
        "smtpscope_tls_sessions_total",
        counter,
        "sessions that used STARTTLS or implicit TLS, their handshake not failed",
        [({}, m.tls_sessions)],
    )
    page.metric(
        "smtpscope_tls_share",
        gauge,
        "share of closed sessions that used TLS (0 to 1)",
        [({}, m.tls_share)] if m.tls_share is not None else [],
    )
    page.histogram(
        "smtpscope_greeting_delay_seconds",
        "TCP handshake to server greeting",
        [({}, m.greeting)],
    )
    page.histogram(
        "smtpscope_command_latency_seconds",
        "client command to server reply, by verb",
        [({"verb": verb}, h) for verb, h in sorted(m.latency.items())],
    )
    page.metric(
        "smtpscope_anomalies_total",
        counter,
        "anomalies by kind",
        [({"kind": k}, v) for k, v in sorted(m.anomalies.items())],
    )
    page.metric(
        "smtpscope_alerts_total",
        counter,
        "alerts raised by detectors, all kinds",
        [({}, sum(m.alerts.values()))],
    )
    page.metric(
        "smtpscope_alerts_by_kind_total",
        counter,
        "alerts raised by detectors, by kind",
        [({"kind": k}, v) for k, v in sorted(m.alerts.items())],
    )
    page.metric(
        "smtpscope_packets_captured_total",
        counter,
        "packets handed over by libpcap, all interfaces",
        [({}, m.capture.received)],
    )
    _capture_metrics(page, interfaces)
    return page.text()


def _capture_metrics(page: _Page, interfaces: Sequence[InterfaceCounts]) -> None:
    page.metric(
        "smtpscope_packets_received_total",
        "counter",
        "packets libpcap counts as received, per interface (platform-specific)",
        [({"interface": i.interface}, i.received) for i in interfaces],
    )
    page.metric(
        "smtpscope_packets_dropped_total",
        "counter",
        "packets dropped for lack of room in the kernel ring, per interface",
        [({"interface": i.interface}, i.dropped) for i in interfaces],
    )
    page.metric(
        "smtpscope_packets_interface_dropped_total",
        "counter",
        "packets dropped by the interface or its driver, per interface",
        [({"interface": i.interface}, i.interface_dropped) for i in interfaces],
    )


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves the latest page on ``/metrics`` from a daemon thread."""

    def __init__(self, address: str, port: int) -> None:
        self._text = "# no data yet\n"
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = outer._text.encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics: " + format, *args)

        server_class = _Server6 if ":" in address else http.server.ThreadingHTTPServer
        self._server = server_class((address, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="smtpscope-metrics", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def publish(self, text: str) -> None:
        # One reference assignment: the handler sees the old page or the
        # new one, never a mix.
        self._text = text

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
