"""Sans-IO SMTP parsing: bytes for one direction in, typed events out.

The parser owns no socket, clock or logger. Feed it the client's and the
server's bytes in capture order with their timestamps; it returns events
(``analysis.smtp.events``) describing what was said, and never raises on what
the wire contains: odd traffic becomes ``AnomalySeen`` events.
"""

from analysis.smtp.parser import SmtpParser

__all__ = ["SmtpParser"]
