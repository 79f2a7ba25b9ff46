"""``python -m analysis``: the same command as ``smtpscope``."""

import sys

from analysis.cli import main

sys.exit(main())
