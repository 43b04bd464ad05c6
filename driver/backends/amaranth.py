"""The Npu in Amaranth's Python simulator as a backend (slow, needs no other tool)."""

from sim.amaranth_runner import AmaranthSession

from .base import SimulatorBackend

__all__ = ["AmaranthBackend"]


class AmaranthBackend(SimulatorBackend):
    """Runs command streams on the Amaranth description itself, cycle by cycle.

    Options
    -------
    trace : path-like, optional
        Write a VCD waveform of the whole session here.
    stall_probability : float
        Random idle cycles and backpressure on the chip's streams (for testing).
    max_idle_cycles : int
        Cycles without progress before a run raises TimeoutError.
    """

    name = "amaranth"

    def __init__(self, *, config=None, trace=None, stall_probability=0.0, seed=0,
                 max_idle_cycles=100_000):
        super().__init__(config=config, stall_probability=stall_probability, seed=seed,
                         max_idle_cycles=max_idle_cycles)
        self._session = AmaranthSession(config=self.config, trace=trace)
