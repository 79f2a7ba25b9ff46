"""Packets to ordered TCP byte streams. Knows nothing of SMTP, pandas or rich."""

import logging

# A library logs and leaves the output to its application: without this,
# Python's last-resort handler printed each damaged capture's warning on
# stderr in a notebook, where the caller also has it in the stats' errors.
logging.getLogger(__name__).addHandler(logging.NullHandler())
