"""The port of the project's capture of implicit TLS off 465.

``pcaps/implicit-tls-10465.pcap`` (made by ``pcaps/scripts/tlsport.py``)
holds a session on a port no default names: tests that read every capture
of ``pcaps/`` name it as ``--tls-port`` does, or it would be left out.
"""

from __future__ import annotations

from analysis import pipeline

CAPTURE = "implicit-tls-10465.pcap"
PORT = 10465
# What read --tls-port 10465 takes as TLS from the first byte, and watches.
IMPLICIT_TLS = pipeline.IMPLICIT_TLS_PORTS | {PORT}
PORTS = pipeline.DEFAULT_PORTS | {PORT}
