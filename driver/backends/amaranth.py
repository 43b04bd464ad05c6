"""The Npu in Amaranth's Python simulator as a backend (slow, needs no other tool)."""

from sim.amaranth_runner import AmaranthSession

from .base import Backend, ExecuteResult

__all__ = ["AmaranthBackend"]


class AmaranthBackend(Backend):
    """Runs command streams on the Amaranth description itself, cycle by cycle.

    Options
    -------
    trace : path-like, optional
        Write a VCD waveform of the whole session here.
    stall_probability : float
        Random idle cycles and backpressure on the chip's streams (for testing).
    """

    name = "amaranth"

    def __init__(self, *, config=None, trace=None, stall_probability=0.0, seed=0):
        super().__init__(config=config)
        self.stall_probability = float(stall_probability)
        self.seed = seed
        self._session = AmaranthSession(config=self.config, trace=trace)
        self._runs = 0

    def execute(self, commands, data_in=b""):
        self._runs += 1
        run = self._session.run(commands, data_in, stall_probability=self.stall_probability,
                                seed=self.seed + self._runs)
        return ExecuteResult(data_out=run.data_out, status=run.status, cycles=run.cycles,
                             cycles_measured=True)

    def close(self):
        self._session.close()
