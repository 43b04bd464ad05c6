"""The generated Verilog on Verilator and Icarus, as backends.

``verilator`` runs the Verilated chip with its host loop compiled next to it
(:mod:`sim.compiled_harness`): millions of cycles per second, no cocotb.  With
``cocotb=True`` it runs the same Verilator model under cocotb instead
(:class:`sim.rtl.RtlSession`, the host loop in Python, about 15,000 cycles/s), as the
``icarus`` backend always does: the path of the cocotb testbench, kept to check the
compiled loop against.
"""

from sim.compiled_harness import CompiledSimulation, compiled_problem
from sim.rtl import RtlSimulation, simulator_problem

from .base import BackendUnavailable, SimulatorBackend

__all__ = ["VerilatorBackend", "IcarusBackend"]


class _CocotbBackend(SimulatorBackend):
    """One chip under cocotb per backend: built once per configuration, kept running
    between :meth:`execute` calls.

    Options
    -------
    trace : path-like, optional
        Write a waveform of the whole session here when the backend closes
        (Verilator under cocotb: VCD, Icarus: FST; both open in GTKWave or Surfer).
    stall_probability : float
        Random idle cycles and backpressure on the chip's streams (for testing).
    max_idle_cycles : int
        Cycles without progress before a run raises TimeoutError.
    """

    simulator = None

    def __init__(self, *, config=None, trace=None, stall_probability=0.0, seed=0,
                 build_root=None, max_idle_cycles=100_000):
        super().__init__(config=config, stall_probability=stall_probability, seed=seed,
                         max_idle_cycles=max_idle_cycles)
        simulation = RtlSimulation(config=self.config, simulator=self.simulator,
                                   trace=trace is not None, build_root=build_root)
        self._session = simulation.session(trace_path=trace)

    @classmethod
    def check_available(cls):
        problem = simulator_problem(cls.simulator)
        if problem:
            raise BackendUnavailable(f"backend {cls.name!r} needs {cls.simulator}: {problem}")


class VerilatorBackend(SimulatorBackend):
    """The Verilated chip, built once per configuration and kept alive between
    :meth:`execute` calls.

    Options
    -------
    trace : path-like, optional
        Write a waveform of the whole session here (FST; with ``cocotb=True``, VCD),
        complete once the backend is closed.
    stall_probability : float
        Random idle cycles and backpressure on the chip's streams (for testing); the
        compiled loop draws them from its own generator (:mod:`sim.compiled_harness`).
    cocotb : bool
        Run the model under cocotb, the host loop in Python (slow; for comparison).
    max_idle_cycles : int
        Cycles without progress before a run raises TimeoutError.
    """

    name = "verilator"

    def __init__(self, *, config=None, trace=None, stall_probability=0.0, seed=0,
                 build_root=None, cocotb=False, max_idle_cycles=100_000):
        super().__init__(config=config, stall_probability=stall_probability, seed=seed,
                         max_idle_cycles=max_idle_cycles)
        if not isinstance(cocotb, bool):
            raise TypeError(f"cocotb must be a bool, not {cocotb!r}")
        self.cocotb = cocotb
        if cocotb:
            problem = simulator_problem("verilator")
            if problem:
                raise BackendUnavailable(f"backend 'verilator' with cocotb=True: {problem}")
            simulation = RtlSimulation(config=self.config, simulator="verilator",
                                       trace=trace is not None, build_root=build_root)
        else:
            simulation = CompiledSimulation(config=self.config, trace=trace is not None,
                                            build_root=build_root)
        self._session = simulation.session(trace_path=trace)

    @classmethod
    def check_available(cls):
        problem = compiled_problem()
        if problem:
            raise BackendUnavailable(f"backend {cls.name!r} needs Verilator: {problem}")


class IcarusBackend(_CocotbBackend):
    name = "icarus"
    simulator = "icarus"
