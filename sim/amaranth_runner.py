"""Runs command streams on the Npu in Amaranth's Python simulator.

:class:`AmaranthSession` keeps one simulated chip alive across runs, so its
buffers, parameters and sticky error persist as on a real chip.  Each run is a
job for a testbench that never ends; the session advances the simulator until
the job is done.
"""

import random
from dataclasses import dataclass

from amaranth.sim import Simulator

from hw.config import NpuConfig, check_config
from hw.isa import StatusRecord
from hw.npu import Npu

__all__ = ["AmaranthRun", "AmaranthSession", "run_amaranth"]


@dataclass
class AmaranthRun:
    """What one run sent and how long it took."""
    data_out: bytes
    status: StatusRecord
    cycles: int
    array_cycles: int


@dataclass
class _Job:
    commands: list
    beats: list
    stall_probability: float
    seed: int
    max_idle_cycles: int
    result: AmaranthRun | None = None
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
        self._jobs = []
        self._sim = Simulator(self.dut)
        self._sim.add_clock(1e-8)
        self._sim.add_testbench(self._serve)
        self._trace = None
        if trace is not None:
            self._trace = self._sim.write_vcd(str(trace))
            self._trace.__enter__()

    def run(self, commands, data_in=b"", *, stall_probability=0.0, seed=0,
            max_idle_cycles=100_000):
        """Push ``commands`` and ``data_in`` into the chip; return what came out.

        Parameters
        ----------
        stall_probability : float
            Chance per cycle of an idle cycle on each input stream and of
            backpressure on the output stream.
        max_idle_cycles : int
            Give up (TimeoutError) after this many cycles without progress.
        """
        beat_bytes = self.config.data_bytes
        data_in = bytes(data_in)
        if len(data_in) % beat_bytes:
            raise ValueError(f"data_in must be whole {beat_bytes}-byte beats, "
                             f"not {len(data_in)} bytes")
        job = _Job(commands=[int(c) for c in commands],
                   beats=[int.from_bytes(data_in[i:i + beat_bytes], "little")
                          for i in range(0, len(data_in), beat_bytes)],
                   stall_probability=stall_probability, seed=seed,
                   max_idle_cycles=max_idle_cycles)
        self._jobs.append(job)
        while job.result is None and job.error is None:
            self._sim.advance()
        if job.error is not None:
            raise job.error
        return job.result

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
                job.result = await self._execute(ctx, job)
            except Exception as exc:  # surfaced to the caller of run()
                job.error = exc

    async def _execute(self, ctx, job):
        dut = self.dut
        rng = random.Random(job.seed)
        stall = job.stall_probability
        streams = [(dut.commands, job.commands), (dut.data_in, job.beats)]
        index = [0, 0]
        out_beats = []
        start_cycles, start_array = ctx.get(dut.cycles), ctx.get(dut.array_cycles)
        target = (ctx.get(dut.executed) + len(job.commands)) & 0xFFFF_FFFF
        idle, last_progress = 0, None
        while True:
            # Offer the next item on each input (keeping an offer until it is taken).
            for i, (stream, items) in enumerate(streams):
                offering = ctx.get(stream.valid)
                if not offering:
                    if index[i] < len(items) and not (stall and rng.random() < stall):
                        ctx.set(stream.payload, items[index[i]])
                        ctx.set(stream.valid, 1)
            ready_out = not (stall and rng.random() < stall)
            ctx.set(dut.data_out.ready, ready_out)
            _, _, *sampled = await ctx.tick().sample(
                dut.commands.valid, dut.commands.ready, dut.data_in.valid, dut.data_in.ready,
                dut.data_out.valid, dut.data_out.payload)
            cmd_valid, cmd_ready, data_valid, data_ready, out_valid, out_payload = sampled
            for i, (valid, ready) in enumerate([(cmd_valid, cmd_ready), (data_valid, data_ready)]):
                if valid and ready:
                    index[i] += 1
                    ctx.set(streams[i][0].valid, 0)
            if out_valid and ready_out:
                out_beats.append(out_payload)
            if (index[0] == len(job.commands) and ctx.get(dut.executed) == target
                    and not ctx.get(dut.busy) and not ctx.get(dut.data_out.valid)):
                break
            progress = (index[0], index[1], len(out_beats))
            idle = idle + 1 if progress == last_progress else 0
            last_progress = progress
            if idle > job.max_idle_cycles:
                raise TimeoutError(f"the simulated Npu made no progress for {idle} cycles: "
                                   f"{progress[0]} commands, {progress[1]} data beats in, "
                                   f"{progress[2]} beats out")
        # Data the program did not consume (commands skipped after an error) is dropped,
        # as the golden model drops it: nothing of this run may leak into the next.
        for stream, _ in streams:
            ctx.set(stream.valid, 0)
        ctx.set(dut.data_out.ready, 0)
        beat_bytes = self.config.data_bytes
        return AmaranthRun(
            data_out=b"".join(b.to_bytes(beat_bytes, "little") for b in out_beats),
            status=StatusRecord(error=ctx.get(dut.error), error_opcode=ctx.get(dut.error_opcode),
                                commands=ctx.get(dut.executed)),
            cycles=(ctx.get(dut.cycles) - start_cycles) & 0xFFFF_FFFF,
            array_cycles=(ctx.get(dut.array_cycles) - start_array) & 0xFFFF_FFFF)


def run_amaranth(config, commands, data_in=b"", *, stall_probability=0.0, seed=0, trace=None,
                 max_idle_cycles=100_000):
    """Run one command stream on a freshly reset simulated Npu (see :class:`AmaranthSession`)."""
    with AmaranthSession(config=config, trace=trace) as session:
        return session.run(commands, data_in, stall_probability=stall_probability, seed=seed,
                           max_idle_cycles=max_idle_cycles)
