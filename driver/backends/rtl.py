"""The generated Verilog under cocotb, on Verilator or Icarus, as backends."""

from sim.rtl import RtlSimulation, simulator_problem

from .base import BackendUnavailable, SimulatorBackend

__all__ = ["VerilatorBackend", "IcarusBackend"]


class _RtlBackend(SimulatorBackend):
    """One simulated chip per backend: built once per configuration, kept running
    between :meth:`execute` calls.

    Options
    -------
    trace : path-like, optional
        Write a waveform of the whole session here when the backend closes
        (Verilator: VCD, Icarus: FST; both open in GTKWave or Surfer).
    stall_probability : float
        Random idle cycles and backpressure on the chip's streams (for testing).
    """

    simulator = None

    def __init__(self, *, config=None, trace=None, stall_probability=0.0, seed=0,
                 build_root=None):
        super().__init__(config=config, stall_probability=stall_probability, seed=seed)
        simulation = RtlSimulation(config=self.config, simulator=self.simulator,
                                   trace=trace is not None, build_root=build_root)
        self._session = simulation.session(trace_path=trace)

    @classmethod
    def check_available(cls):
        problem = simulator_problem(cls.simulator)
        if problem:
            raise BackendUnavailable(f"backend {cls.name!r} needs {cls.simulator}: {problem}")


class VerilatorBackend(_RtlBackend):
    name = "verilator"
    simulator = "verilator"


class IcarusBackend(_RtlBackend):
    name = "icarus"
    simulator = "icarus"
