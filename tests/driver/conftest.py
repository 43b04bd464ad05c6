"""Driver tests: PyTorch references run on the qnnpack engine."""

import pytest


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
