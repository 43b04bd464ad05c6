"""Simulation scaffolding shared by the component testbenches.

:func:`simulate` runs testbenches on a component under a deadlock watchdog;
:func:`producer` and :func:`consumer` wrap the stalling stream helpers of
``streams.py`` as testbenches, :func:`random_ready` takes from a stream with
``ready`` random in every cycle, and :func:`with_tail` lets a few cycles pass
after a testbench; :class:`Monitor` records the transfers of streams in the order
they happen and checks the stream rules on the way (once ``valid`` rises, it and
the payload hold until the transfer); :class:`Trace` records named signals at
every clock edge for cycle-level checks; the conversion helpers turn
``data.Const`` values into Python integers, lists and bytes;
:func:`invalidated` builds invalid requantization records (valid and invalid
commands come from their rules: ``sim.programs.valid_instruction``).
"""

import dataclasses
import random

from amaranth.lib import data
from amaranth.sim import Simulator
from streams import StreamStalls, put_all, stream_get

__all__ = ["simulate", "producer", "consumer", "random_ready", "with_tail", "wait_for",
           "Monitor", "Trace", "stream_signals", "as_int", "elements", "as_bytes", "wrap",
           "invalidated"]

#: Clock period of every simulation, in seconds.
PERIOD = 1e-6
#: Cycles after which :func:`simulate` declares the testbenches deadlocked.
MAX_CYCLES = 200_000


def simulate(dut, *testbenches, background=(), max_cycles=MAX_CYCLES):
    """Run ``testbenches`` (and ``background`` ones) on ``dut`` until the former finish.

    Raises
    ------
    AssertionError
        If a testbench assertion fails, or the testbenches have not finished after
        ``max_cycles`` cycles (a deadlock: a stream that never moves).
    """
    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for testbench in background:
        sim.add_testbench(testbench, background=True)

    async def watchdog(ctx):
        await ctx.delay(max_cycles * PERIOD)
        raise AssertionError(f"testbenches still waiting after {max_cycles} cycles")

    sim.add_testbench(watchdog, background=True)
    sim.run()


def producer(stream, payloads, *, seed, probability=0.3):
    """A testbench that puts ``payloads`` on ``stream`` with random idle cycles."""
    async def testbench(ctx):
        await put_all(ctx, stream, payloads, StreamStalls(seed=seed, probability=probability))
    return testbench


def consumer(stream, count, into, *, seed, probability=0.3):
    """A testbench that takes ``count`` payloads from ``stream`` with random backpressure,
    appending each to the list ``into`` as it arrives."""
    async def testbench(ctx):
        stalls = StreamStalls(seed=seed, probability=probability)
        for _ in range(count):
            into.append(await stream_get(ctx, stream, stalls))
    return testbench


def random_ready(stream, count, into, *, seed, probability=0.3):
    """A testbench that takes ``count`` payloads from ``stream``, its ``ready`` low with
    ``probability`` in every cycle (whether or not a payload waits), appending each
    payload to the list ``into`` as it arrives."""
    async def testbench(ctx):
        rng = random.Random(seed)
        while len(into) < count:
            ready = rng.random() >= probability
            ctx.set(stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
            if ready and valid:
                into.append(payload)
        ctx.set(stream.ready, 0)
    return testbench


def with_tail(testbench, cycles=3):
    """A testbench that runs ``testbench``, then lets ``cycles`` more clock edges pass, so
    that background monitors record the last transfers and the idle cycles after them."""
    async def tailed(ctx):
        await testbench(ctx)
        for _ in range(cycles):
            await ctx.tick()
    return tailed


async def wait_for(ctx, condition):
    """Tick until the Python predicate ``condition()`` holds (for hand-offs between
    testbenches)."""
    while not condition():
        await ctx.tick()


class Monitor:
    """Records transfers on named streams, in order, and checks the stream rules.

    Parameters
    ----------
    streams : dict of str to stream interface
    extras : dict of str to signal, optional
        Sampled at the same clock edge as each transfer and logged with it.
    on_transfer : callable, optional
        Called as ``on_transfer(name, payload, extras)`` at each transfer, so that a
        test can check as the simulation runs and fail at the first wrong transfer.

    Attributes
    ----------
    log : list of (edge, name, payload, extras)
        Every transfer with the number of the clock edge it happened at, in order
        (same-edge transfers in ``streams`` order).
    """

    def __init__(self, streams, extras=None, on_transfer=None):
        self.streams = dict(streams)
        self.extras = dict(extras or {})
        self.on_transfer = on_transfer
        self.log = []

    def transfers(self, name):
        """The payloads transferred on stream ``name``, in order."""
        return [payload for _, n, payload, _ in self.log if n == name]

    async def process(self, ctx):
        names = list(self.streams)
        signals = [s for stream in self.streams.values()
                   for s in (stream.valid, stream.ready, stream.payload)]
        signals += self.extras.values()
        held = {}
        edge = 0
        async for _, _, *values in ctx.tick().sample(*signals):
            edge += 1
            extras = dict(zip(self.extras, values[3 * len(names):], strict=True))
            for i, name in enumerate(names):
                valid, ready, payload = values[3 * i:3 * i + 3]
                if name in held:
                    assert valid, f"{name}: valid fell before the transfer"
                    assert payload == held[name], f"{name}: payload changed before the transfer"
                if valid and ready:
                    self.log.append((edge, name, payload, extras))
                    if self.on_transfer is not None:
                        self.on_transfer(name, payload, extras)
                    held.pop(name, None)
                elif valid:
                    held[name] = payload
                else:
                    held.pop(name, None)


class Trace:
    """Samples named signals at every clock edge.

    Parameters
    ----------
    signals : dict of str to signal
    on_edge : callable, optional
        Called as ``on_edge(row)`` with each new row, so that a test can check as the
        simulation runs and fail at the first wrong cycle.

    Attributes
    ----------
    rows : list of dict
        ``rows[i]`` holds the values the signals had just before clock edge ``i + 1``:
        what that edge acts on (a transfer at edge ``i + 1`` is ``valid`` and
        ``ready`` both high in ``rows[i]``).
    """

    def __init__(self, signals, on_edge=None):
        self.signals = dict(signals)
        self.on_edge = on_edge
        self.rows = []

    def transfers(self, name):
        """Indices of the rows in which stream ``name`` (traced as ``name.valid`` and
        ``name.ready``) transferred."""
        return [i for i, row in enumerate(self.rows)
                if row[f"{name}.valid"] and row[f"{name}.ready"]]

    async def process(self, ctx):
        names = list(self.signals)
        async for _, _, *values in ctx.tick().sample(*self.signals.values()):
            row = dict(zip(names, values, strict=True))
            self.rows.append(row)
            if self.on_edge is not None:
                self.on_edge(row)


def stream_signals(name, stream, payload=True):
    """``{name.valid, name.ready[, name.payload]}`` of ``stream``, for a :class:`Trace`."""
    signals = {f"{name}.valid": stream.valid, f"{name}.ready": stream.ready}
    if payload:
        signals[f"{name}.payload"] = stream.payload
    return signals


def as_int(value):
    """The bits of a ``data.Const`` (or an int) as a non-negative integer."""
    return value.as_bits() if isinstance(value, data.Const) else int(value)


def elements(value):
    """The elements of an ``ArrayLayout`` constant as a list."""
    return [value[i] for i in range(value.shape().length)]


def as_bytes(value, nbytes):
    """The first ``nbytes`` bytes of a constant, least significant first."""
    return (as_int(value) & ((1 << 8 * nbytes) - 1)).to_bytes(nbytes, "little")


def wrap(value, bits):
    """Two's complement wrap of an integer to ``bits`` bits."""
    half = 1 << (bits - 1)
    return ((int(value) + half) % (1 << bits)) - half


def invalidated(record, choose):
    """``record`` made invalid in one of the ways :attr:`hw.isa.ParamRecord.valid` rejects:
    shift 0, or rounding 3 while that is no defined mode; ``choose`` picks from a list."""
    ways = [w for w in ({"shift": 0}, {"rounding": 3})
            if not dataclasses.replace(record, **w).valid]
    return dataclasses.replace(record, **choose(ways))
