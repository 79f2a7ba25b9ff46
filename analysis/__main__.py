"""``python -m analysis``: the same command as ``smtpscope``."""

import sys

from analysis.launch import run

sys.exit(run())
