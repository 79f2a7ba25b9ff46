"""Packets to ordered TCP byte streams. Knows nothing of SMTP, pandas or rich."""
