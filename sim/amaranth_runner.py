"""Runs command streams on the Npu in Amaranth's Python simulator.

:class:`AmaranthSession` keeps one simulated chip alive across runs, so its
buffers, parameters and sticky error persist as on a real chip until
:meth:`AmaranthSession.reset`.  Each run (and each reset) is a job for a testbench
that never ends; the session advances the simulator until the job is done.  The chip's
reset is its sync domain's, through a :class:`~amaranth.hdl.ResetInserter` the
testbench drives.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator

from hw.beats import from_beats, to_beats
from hw.config import NpuConfig, check_config
from hw.isa import StatusRecord
from hw.npu import Npu
from sim.host_loop import RESET_EDGES, HostLoop, RunTimeout, counter_difference, stream_pauses
from sim.run_result import RunResult

__all__ = ["AmaranthSession", "run_amaranth"]


@dataclass
class _Job:
    #: Makes the run's HostLoop from the chip's ``executed`` counter when the run starts;
    #: None for a reset.
    make_loop: Callable[..., HostLoop] | None
    result: RunResult | None = None
    error: Exception | None = None


class AmaranthSession:
    """One simulated Npu.

    Parameters
    ----------
    config : NpuConfig
    trace : str or path, optional
        Write a VCD waveform of the whole session to this file (closed by :meth:`close`).
    """

    def __init__(self, *, config=None, trace=None):
        if config is None:
            config = NpuConfig()
        check_config(config)
        self.config = config
        self.dut = Npu(config=config)
        #: The chip's reset, as the ``rst`` input of the RTL.
        self.rst = Signal()
        self._jobs = []
        self._sim = Simulator(ResetInserter(self.rst)(self.dut))
        self._sim.add_clock(1e-8)
        self._sim.add_testbench(self._serve)
        self._trace = None
        if trace is not None:
            self._trace = self._sim.write_vcd(str(trace))
            self._trace.__enter__()

    def run(self, commands, data_in=b"", *, stall_probability=0.0, seed=0, commands_pause=None,
            data_in_pause=None, data_out_pause=None, max_idle_cycles=100_000):
        """Push ``commands`` and ``data_in`` into the chip; return what came out.

        Parameters
        ----------
        commands : iterable of int
            64-bit command words.
        data_in : bytes-like
            The data-in stream (whole beats).
        stall_probability : float
            Chance per cycle of an idle cycle on each input stream and of
            backpressure on the output stream (for streams without their own pauses).
        seed : int
            Seed of those random pauses.
        commands_pause, data_in_pause, data_out_pause : iterable of bool, optional
            A stream's pause generator, one value per cycle (see :mod:`sim.host_loop`).
        max_idle_cycles : int
            Give up (TimeoutError) after this many cycles without progress.

        Returns
        -------
        RunResult
            With the chip's own cycle counts (``cycles_measured`` is True).
        """
        pauses = stream_pauses(stall_probability=stall_probability, seed=seed,
                               commands_pause=commands_pause, data_in_pause=data_in_pause,
                               data_out_pause=data_out_pause)
        beats = to_beats(self.config, data_in)
        job = _Job(make_loop=partial(HostLoop, commands=commands, data_in=beats, pauses=pauses,
                                     max_idle_cycles=max_idle_cycles))
        self._jobs.append(job)
        while job.result is None and job.error is None:
            self._sim.advance()
        if job.error is not None:
            raise job.error
        return job.result

    def reset(self):
        """Reset the chip (the contract's reset of :mod:`sim.host_loop`): registers
        cleared, buffers kept, whatever it was doing (``RESET_STATE`` in :mod:`hw.isa`)."""
        job = _Job(make_loop=None)
        self._jobs.append(job)
        while job.result is None and job.error is None:
            self._sim.advance()
        if job.error is not None:
            raise job.error

    def close(self):
        if self._trace is not None:
            self._trace.__exit__(None, None, None)
            self._trace = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def _serve(self, ctx):
        while True:
            if not self._jobs:
                await ctx.tick()
                continue
            job = self._jobs.pop(0)
            try:
                if job.make_loop is None:
                    job.result = await self._reset(ctx)
                    continue
                job.result = await self._execute(ctx, job)
            except Exception as exc:  # surfaced to the caller of run()
                job.error = exc

    async def _reset(self, ctx):
        dut = self.dut
        for port in (dut.commands.valid, dut.data_in.valid, dut.data_out.ready):
            ctx.set(port, 0)
        ctx.set(self.rst, 1)
        await ctx.tick().repeat(RESET_EDGES)
        ctx.set(self.rst, 0)
        await ctx.tick()
        return True

    async def _execute(self, ctx, job):
        dut = self.dut
        start_cycles, start_array = ctx.get(dut.cycles), ctx.get(dut.array_cycles)
        loop = job.make_loop(executed=ctx.get(dut.executed))
        ports = (dut.commands.valid, dut.commands.payload, dut.data_in.valid,
                 dut.data_in.payload, dut.data_out.ready)
        # What each driven port holds now: a port is set only when its value changes.
        driven = [None] * len(ports)

        def drive():
            values = (loop.commands_valid, loop.commands_payload, loop.data_in_valid,
                      loop.data_in_payload, loop.data_out_ready)
            for index, value in enumerate(values):
                if value != driven[index]:
                    ctx.set(ports[index], value)
                    driven[index] = value

        sampled = (dut.commands.ready, dut.data_in.ready, dut.data_out.valid,
                   dut.data_out.payload, dut.executed, dut.busy)
        config = self.config

        def status():
            return StatusRecord(error=ctx.get(dut.error), error_opcode=ctx.get(dut.error_opcode),
                                commands=ctx.get(dut.executed))

        try:
            drive()
            done = False
            while not done:
                _, _, *values = await ctx.tick().sample(*sampled)
                done = loop.step(*values)
                drive()
        except RunTimeout as timeout:
            timeout.result = loop.partial_result(config, status())
            raise
        finally:
            loop.stop()
            drive()
        array_cycles = counter_difference(ctx.get(dut.array_cycles), start_array)
        return RunResult(
            data_out=from_beats(config, loop.data_out),
            status=status(),
            cycles=counter_difference(ctx.get(dut.cycles), start_cycles), cycles_measured=True,
            array_cycles=array_cycles, array_macs=array_cycles * config.rows * config.cols,
            data_in_used=loop.data_in_taken * config.data_bytes)


def run_amaranth(config, commands, data_in=b"", *, trace=None, **options):
    """Run one command stream on a freshly reset simulated Npu.

    ``options`` are those of :meth:`AmaranthSession.run`.
    """
    with AmaranthSession(config=config, trace=trace) as session:
        return session.run(commands, data_in, **options)
