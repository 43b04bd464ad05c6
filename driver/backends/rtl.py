"""The generated Verilog under cocotb, on Verilator or Icarus, as backends."""

from sim.rtl import RtlSimulation, simulator_problem

from .base import Backend, BackendUnavailable, ExecuteResult

__all__ = ["VerilatorBackend", "IcarusBackend"]


class _RtlBackend(Backend):
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
        super().__init__(config=config)
        self.stall_probability = float(stall_probability)
        self.seed = seed
        simulation = RtlSimulation(config=self.config, simulator=self.simulator,
                                   trace=trace is not None, build_root=build_root)
        self._session = simulation.session(trace_path=trace)
        self._runs = 0

    @classmethod
    def check_available(cls):
        problem = simulator_problem(cls.simulator)
        if problem:
            raise BackendUnavailable(f"backend {cls.name!r} needs {cls.simulator}: {problem}")

    def execute(self, commands, data_in=b""):
        self._runs += 1
        run = self._session.run(commands, data_in, stall_probability=self.stall_probability,
                                seed=self.seed + self._runs)
        return ExecuteResult(data_out=run.data_out, status=run.status, cycles=run.cycles,
                             cycles_measured=True)

    def close(self):
        if self._session is not None:
            self._session.close()
            self._session = None


class VerilatorBackend(_RtlBackend):
    name = "verilator"
    simulator = "verilator"


class IcarusBackend(_RtlBackend):
    name = "icarus"
    simulator = "icarus"
