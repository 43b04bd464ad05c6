"""The golden NumPy model as a backend."""

from sim.golden import GoldenNpu

from .base import Backend, ExecuteResult

__all__ = ["GoldenBackend"]


class GoldenBackend(Backend):
    """Runs command streams on :class:`sim.golden.GoldenNpu`."""

    name = "golden"

    def __init__(self, *, config=None, **options):
        super().__init__(config=config)
        self.model = GoldenNpu(self.config)

    def execute(self, commands, data_in=b""):
        result = self.model.run(commands, data_in)
        return ExecuteResult(data_out=result.data_out, status=result.status,
                             cycles=result.cycles, cycles_measured=False)
