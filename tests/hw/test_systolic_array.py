# amaranth: UnusedElaboratable=no
"""The double-buffered systolic array against NumPy and a cycle-level model of its banks.

Verifies ``hw/systolic_array.py`` on 1x1, 2x3, 3x2 and 4x4 arrays with random
operands over the whole 9-bit range.  A model traced at every clock edge holds
both weight banks (a ``weight_in`` beat into bank ``b`` shifts bank ``b`` down by a
row, bottom row first) and every vector in flight, and checks in every cycle:

* the bank hazard: ``weight_in.ready`` is low exactly when a vector using the bank
  named by the ``weight_in`` payload is waiting at ``act_in`` or in flight for at most
  ``rows + cols - 1`` cycles, before every cell has registered its weight (whether
  or not a beat is offered), so a tile never changes under a vector that uses it;
* ``act_in.ready`` is the pipeline enable (``result`` empty or taken), whatever
  ``weight_in`` does, and ``busy`` says whether a vector is in flight;
* each result leaves ``rows + cols - 2 + PE_LATENCY`` enabled cycles after its vector was
  taken, in order, with its tag and ``a @ W`` for the bank the vector named, as
  that bank was when the vector entered.

Three stream mixes run through it: independent random weight rows and vectors
with random banks (the hazard refusing and admitting weights both ways); the
matmul unit's double buffering, tile ``k`` loading into one bank while batch
``k - 1`` streams through the other, whose results are also compared with
``a_k @ W_k`` and whose tile loads must really overlap the streaming; and a full,
stalled pipeline of bank-0 vectors with a bank-1 vector waiting at ``act_in``,
where neither bank may take a row until its vectors have left.  In the first two
every stream sees random idle cycles (``weight_in``, ``act_in``) or backpressure
(``result``), and the result stream must keep ``valid`` and its payload until
taken.
"""

import dataclasses
import random
from collections import Counter

import numpy as np
import pytest
from amaranth import unsigned
from harness import (
    Monitor,
    Trace,
    consumer,
    elements,
    simulate,
    stream_signals,
    wait_for,
    with_tail,
)
from streams import StreamStalls

from hw.config import NpuConfig
from hw.pe import PE_LATENCY
from hw.systolic_array import SystolicArray

SHAPES = [(1, 1), (2, 3), (3, 2), (4, 4)]
OPERANDS = (-256, 256)


def _config(rows, cols):
    return NpuConfig(rows=rows, cols=cols, act_depth=16, weight_tiles=1, acc_depth=16,
                     data_bytes=4)


@dataclasses.dataclass
class _Vector:
    age: int            # enabled clock edges since it was taken
    bank: int
    values: list        # the expected result row
    tag: int


class ArrayModel:
    """Both weight banks and the vectors in flight, advanced one traced cycle at a time.

    Attributes
    ----------
    results : list of (list of int, int)
        The result rows and tags taken from the array, as checked.
    stats : Counter
        How often each case of interest came up.
    """

    def __init__(self, rows, cols):
        # Skew and wavefront to the bottom-right cell, then that cell's stages.
        self.latency = rows + cols - 2 + PE_LATENCY
        # Cell (r, c) registers its weight r + c cycles in; one cycle of margin more.
        self.hold = rows + cols - 1
        self.banks = [np.zeros((rows, cols), dtype=np.int64) for _ in range(2)]
        self.in_flight = []
        self.results = []
        self.stats = Counter()

    def edge(self, row):
        """Check the outputs of one traced cycle, then advance past its clock edge."""
        leaving = [v for v in self.in_flight if v.age == self.latency]
        assert row["result.valid"] == bool(leaving), "result.valid"
        en = not row["result.valid"] or row["result.ready"]
        assert row["act_in.ready"] == en, "act_in.ready is not the pipeline enable"
        assert row["busy"] == bool(self.in_flight), "busy"

        act, weight = row["act_in.payload"], row["weight_in.payload"]
        flying = any(v.bank == weight.bank and v.age <= self.hold for v in self.in_flight)
        waiting = row["act_in.valid"] and act.bank == weight.bank
        assert row["weight_in.ready"] == (not flying and not waiting), \
            f"weight_in.ready for bank {weight.bank} (in flight: {flying}, waiting: {waiting})"
        offered = row["weight_in.valid"]
        self.stats["refused_in_flight"] += offered and flying
        self.stats["refused_waiting"] += waiting and not flying    # offered or not
        took_weights = offered and row["weight_in.ready"]
        self.stats["overlapped"] += took_weights and any(
            v.bank != weight.bank for v in self.in_flight)
        self.stats["shifted_under_leaving"] += took_weights and any(
            v.bank == weight.bank for v in self.in_flight)

        if row["result.valid"] and row["result.ready"]:
            got = ([int(v) for v in elements(row["result.payload"].values)],
                   int(row["result.payload"].tag))
            assert got == (leaving[0].values, leaving[0].tag), f"result {len(self.results)}"
            self.results.append(got)
        if en:
            self.in_flight = [dataclasses.replace(v, age=v.age + 1)
                              for v in self.in_flight if v not in leaving]
            if row["act_in.valid"]:
                a = np.array([int(v) for v in elements(act.values)])
                product = (a @ self.banks[act.bank]).tolist()
                self.in_flight.append(_Vector(1, act.bank, product, int(act.tag)))
                self.stats[f"vectors_bank{act.bank}"] += 1
        if took_weights:
            values = [int(v) for v in elements(weight.values)]
            self.banks[weight.bank] = np.vstack([values, self.banks[weight.bank][:-1]])
            self.stats[f"weights_bank{weight.bank}"] += 1


def _harness(rows, cols):
    """The array, its model and the trace that feeds the model every cycle."""
    dut = SystolicArray(config=_config(rows, cols), tag_shape=unsigned(8))
    model = ArrayModel(rows, cols)
    trace = Trace({**stream_signals("act_in", dut.act_in),
                   **stream_signals("weight_in", dut.weight_in),
                   **stream_signals("result", dut.result), "busy": dut.busy},
                  on_edge=model.edge)
    return dut, model, trace


async def _offer(ctx, stream, payload, stalls, idle_payload=None, on_valid=None):
    """Put ``payload`` on ``stream`` after random idle cycles, during which the payload
    (with ``valid`` low) is ``idle_payload()`` if given; ``on_valid()`` is called as
    ``valid`` rises."""
    for _ in range(stalls.idle_cycles()):
        if idle_payload is not None:
            ctx.set(stream.payload, idle_payload())
        await ctx.tick()
    if on_valid is not None:
        on_valid()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


def _runs(rng, count, switch=0.3):
    """``count`` bank bits in random runs."""
    bank, banks = rng.randrange(2), []
    for _ in range(count):
        bank ^= rng.random() < switch
        banks.append(bank)
    return banks


def _row(rng, length):
    return [int(v) for v in rng.integers(*OPERANDS, length)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_systolic_array_bank_hazard_random_streams(shape):
    rows, cols = shape
    dut, model, trace = _harness(rows, cols)
    rng = np.random.default_rng(rows * 10 + cols)
    pick = random.Random(rows * 10 + cols)
    vectors = 150

    async def weight_driver(ctx):
        stalls = StreamStalls(seed=1, probability=0.5)
        for bank in _runs(pick, 40):
            await _offer(ctx, dut.weight_in, {"values": _row(rng, cols), "bank": bank}, stalls,
                         idle_payload=lambda: {"values": [0] * cols, "bank": pick.randrange(2)})

    async def act_driver(ctx):
        stalls = StreamStalls(seed=2, probability=0.4)
        for bank in _runs(pick, vectors, switch=0.1):
            await _offer(ctx, dut.act_in, {"values": _row(rng, rows), "bank": bank,
                                           "tag": pick.randrange(256)}, stalls)

    monitor = Monitor({"result": dut.result})
    simulate(dut, weight_driver, act_driver,
             with_tail(consumer(dut.result, vectors, [], seed=3, probability=0.5)),
             background=[trace.process, monitor.process])
    assert len(model.results) == len(monitor.transfers("result")) == vectors
    s = model.stats
    # Both banks took weights and carried vectors; the hazard refused weights for a
    # vector in flight and for one waiting, and admitted some beside the other bank's
    # and some while a vector of the same bank, past every cell's weight, was leaving.
    assert min(s["vectors_bank0"], s["vectors_bank1"], s["weights_bank0"],
               s["weights_bank1"]) > 0, s
    assert s["refused_in_flight"] > 0 and s["refused_waiting"] > 0 and s["overlapped"] > 0, s
    assert s["shifted_under_leaving"] > 0, s


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_systolic_array_double_buffered_tiles(shape):
    rows, cols = shape
    dut, model, trace = _harness(rows, cols)
    rng = np.random.default_rng(rows * 10 + cols + 1)
    pick = random.Random(rows * 10 + cols + 1)
    # Tile k goes into bank k % 2; batch k multiplies with it.
    batches = []
    for k in range(6):
        w = rng.integers(*OPERANDS, (rows, cols))
        a = rng.integers(*OPERANDS, (pick.randint(1, 2 * rows + 4), rows))
        batches.append((w, k % 2, a, [pick.randrange(256) for _ in a]))
    starts = np.cumsum([0] + [len(a) for _, _, a, _ in batches]).tolist()
    expected = [(list(map(int, row)), tag) for w, _, a, tags in batches
                for row, tag in zip(a @ w, tags, strict=True)]
    state = {"tiles": 0, "offered": 0}

    async def weight_driver(ctx):
        stalls = StreamStalls(seed=1, probability=0.3)
        for k, (w, bank, _, _) in enumerate(batches):
            # As the matmul unit does: a bank reloads once every vector of the batch
            # before last (the one that used it) has been offered.
            await wait_for(ctx, lambda k=k: state["offered"] >= starts[max(k - 1, 0)])
            for row in w[::-1]:                    # bottom row first
                await _offer(ctx, dut.weight_in, {"values": [int(v) for v in row],
                                                  "bank": bank}, stalls)
            state["tiles"] = k + 1

    async def act_driver(ctx):
        stalls = StreamStalls(seed=2, probability=0.3)
        for k, (_, bank, a, tags) in enumerate(batches):
            await wait_for(ctx, lambda k=k: state["tiles"] > k)
            for vector, tag in zip(a, tags, strict=True):
                await _offer(ctx, dut.act_in, {"values": [int(v) for v in vector],
                                               "tag": tag, "bank": bank}, stalls,
                             on_valid=lambda: state.update(offered=state["offered"] + 1))

    monitor = Monitor({"result": dut.result})
    simulate(dut, weight_driver, act_driver,
             with_tail(consumer(dut.result, len(expected), [], seed=3, probability=0.4)),
             background=[trace.process, monitor.process])
    got = [([int(v) for v in elements(r.values)], int(r.tag))
           for r in monitor.transfers("result")]
    assert got == expected
    assert model.results == expected
    # Tiles loaded beside vectors of the other bank, and waited for their own bank.
    assert model.stats["overlapped"] >= rows, model.stats
    assert model.stats["refused_in_flight"] > 0, model.stats


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_systolic_array_waiting_vector_holds_its_bank(shape):
    # A full, stalled pipeline of bank-0 vectors with a bank-1 vector waiting at
    # act_in: neither bank takes weights until the vectors using it have left.
    rows, cols = shape
    dut, model, trace = _harness(rows, cols)
    rng = np.random.default_rng(rows * 10 + cols + 2)
    tiles = [rng.integers(*OPERANDS, (rows, cols)) for _ in range(2)]
    acts = rng.integers(*OPERANDS, (model.latency + 1, rows))
    late_row = _row(rng, cols)
    expected = ([(list(map(int, row)), i) for i, row in enumerate(acts[:-1] @ tiles[0])]
                + [(list(map(int, acts[-1] @ tiles[1])), model.latency)])
    results = []

    async def put(ctx, stream, payload):
        await _offer(ctx, stream, payload, StreamStalls(probability=0))

    async def testbench(ctx):
        for bank, tile in enumerate(tiles):
            for row in tile[::-1]:
                await put(ctx, dut.weight_in, {"values": [int(v) for v in row], "bank": bank})
        for i, a in enumerate(acts):     # result.ready low: the last one waits
            bank = int(i == model.latency)
            ctx.set(dut.act_in.payload, {"values": [int(v) for v in a], "tag": i, "bank": bank})
            ctx.set(dut.act_in.valid, 1)
            if bank:
                break
            await ctx.tick().until(dut.act_in.ready)
        assert not ctx.get(dut.act_in.ready)
        ctx.set(dut.weight_in.valid, 1)
        for bank in (0, 1, 0, 1):
            ctx.set(dut.weight_in.payload, {"values": late_row, "bank": bank})
            await ctx.tick()
            assert not ctx.get(dut.weight_in.ready)
        # Results leave; the bank-1 vector enters and leaves last, then bank 1 shifts.
        released.append(True)
        await ctx.tick().until(dut.act_in.ready)
        ctx.set(dut.act_in.valid, 0)
        await ctx.tick().until(dut.weight_in.ready)      # the late row shifts
        ctx.set(dut.weight_in.valid, 0)

    released = []
    collect = consumer(dut.result, len(expected), results, seed=4)

    async def results_after_release(ctx):
        await wait_for(ctx, lambda: released)
        await collect(ctx)

    simulate(dut, testbench, results_after_release, background=[trace.process])
    got = [([int(v) for v in elements(r.values)], int(r.tag)) for r in results]
    assert got == expected == model.results
    assert model.stats["refused_waiting"] >= 2 and model.stats["weights_bank1"] == rows + 1
    assert (model.banks[1] == np.vstack([late_row, tiles[1][:-1]])).all()


def test_systolic_array_config_wrong():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        SystolicArray(config=None)
