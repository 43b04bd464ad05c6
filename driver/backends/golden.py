"""The golden NumPy model as a backend."""

from sim.golden import GoldenNpu

from .base import Backend

__all__ = ["GoldenBackend"]


class GoldenBackend(Backend):
    """Runs command streams on :class:`sim.golden.GoldenNpu`."""

    name = "golden"

    def __init__(self, *, config=None, **options):
        super().__init__(config=config)
        self.model = GoldenNpu(self.config)

    def execute(self, commands, data_in=b""):
        return self.model.run(commands, data_in)
