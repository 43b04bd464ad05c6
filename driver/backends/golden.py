"""The golden NumPy model as a backend."""

from sim.golden import DataUnderflow, GoldenNpu
from sim.host_loop import RunTimeout

from .base import Backend

__all__ = ["GoldenBackend"]


class GoldenBackend(Backend):
    """Runs command streams on :class:`sim.golden.GoldenNpu`."""

    name = "golden"

    def __init__(self, *, config=None, **options):
        super().__init__(config=config)
        self.model = GoldenNpu(self.config)

    def _execute(self, commands, data_in):
        try:
            return self.model.run(commands, data_in)
        except DataUnderflow as exc:
            # The chip would wait for ever, as the RTL backends do until their watchdog.
            raise RunTimeout(f"the chip waits for data-in: {exc}", result=exc.result) from exc

    def _reset(self):
        self.model.reset()
