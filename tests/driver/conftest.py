"""Driver tests: make ``import driver`` find the package, not this test folder.

``tests/conftest.py`` puts ``tests/`` on ``sys.path``, where this folder would shadow the
editable-installed ``driver`` package as a namespace package; the repository root first
on the path makes the real package win however pytest is started.
"""

import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
if "driver" in sys.modules and getattr(sys.modules["driver"], "__file__", None) is None:
    del sys.modules["driver"]


@pytest.fixture(autouse=True, scope="session")
def qnnpack_engine():
    """PyTorch references use the qnnpack engine (exact int32 accumulation)."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    yield
    torch.backends.quantized.engine = previous
