"""Puts ``tests/`` on ``sys.path`` so that test modules import ``requant_reference``."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    # Appended, so that tests/driver and tests/sim never hide the real packages.
    sys.path.append(_TESTS)
