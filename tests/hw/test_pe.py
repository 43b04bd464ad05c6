"""The processing element against a register-level Python model.

Verifies ``hw/pe.py``: the multiply-accumulate ``psum_in + act_in * weight`` wraps at
int32, ``en`` low holds the activation and partial-sum registers (the array's
stall), ``weight_shift`` moves weights down a chain of cells independently of
``en``, and a multiply uses the weight the cell held before a shift.  A column of
cells is driven with random operands over their whole ranges (extremes favoured),
random shifts and random stalls, and compared with the model after every cycle.
"""

import random

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from harness import simulate, wrap

from hw.config import ACC_WIDTH, OPERAND_WIDTH
from hw.pe import ProcessingElement

OPERAND_MIN, OPERAND_MAX = -(1 << (OPERAND_WIDTH - 1)), (1 << (OPERAND_WIDTH - 1)) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class Column(Elaboratable):
    """``n`` cells stacked: weights and partial sums flow down, each cell has its own
    activation input."""

    def __init__(self, n):
        self.pes = [ProcessingElement() for _ in range(n)]
        self.en = Signal()
        self.weight_shift = Signal()
        self.weight_in = Signal(signed(OPERAND_WIDTH))
        self.psum_in = Signal(signed(ACC_WIDTH))
        self.act_in = [Signal(signed(OPERAND_WIDTH), name=f"act_in_{i}") for i in range(n)]

    def elaborate(self, platform):
        m = Module()
        for i, pe in enumerate(self.pes):
            m.submodules[f"pe_{i}"] = pe
            above = self.pes[i - 1] if i else None
            m.d.comb += [
                pe.en.eq(self.en),
                pe.weight_shift.eq(self.weight_shift),
                pe.weight_in.eq(above.weight_out if above else self.weight_in),
                pe.psum_in.eq(above.psum_out if above else self.psum_in),
                pe.act_in.eq(self.act_in[i]),
            ]
        return m


def _operand(rng):
    return rng.choice([OPERAND_MIN, OPERAND_MAX, -1, 0, 1, rng.randint(OPERAND_MIN, OPERAND_MAX)])


def _psum(rng):
    return rng.choice([INT32_MIN, INT32_MAX, rng.randint(INT32_MIN, INT32_MAX),
                       rng.randint(-1000, 1000)])


def _run_column(n, seed, cycles, stall_probability=0.3):
    """Drive a column with random inputs; return (cycles that wrapped, stalled cycles,
    shifts)."""
    dut = Column(n)
    rng = random.Random(seed)
    counts = {"wrapped": 0, "stalled": 0, "shifts": 0}

    async def testbench(ctx):
        weight = [0] * n
        act_out = [0] * n
        psum_out = [0] * n
        for _ in range(cycles):
            en = rng.random() >= stall_probability
            shift = rng.random() < 0.3
            weight_in, psum_in = _operand(rng), _psum(rng)
            acts = [_operand(rng) for _ in range(n)]
            ctx.set(dut.en, en)
            ctx.set(dut.weight_shift, shift)
            ctx.set(dut.weight_in, weight_in)
            ctx.set(dut.psum_in, psum_in)
            for i in range(n):
                ctx.set(dut.act_in[i], acts[i])
            await ctx.tick()
            # The model: every register takes its input from before the edge.
            weight_inputs = [weight_in] + weight[:-1]
            psum_inputs = [psum_in] + psum_out[:-1]
            if en:
                exact = [psum_inputs[i] + acts[i] * weight[i] for i in range(n)]
                counts["wrapped"] += sum(not INT32_MIN <= v <= INT32_MAX for v in exact)
                psum_out = [wrap(v, ACC_WIDTH) for v in exact]
                act_out = acts
            else:
                counts["stalled"] += 1
            if shift:
                weight = weight_inputs
                counts["shifts"] += 1
            for i, pe in enumerate(dut.pes):
                assert ctx.get(pe.weight_out) == weight[i], f"cell {i} weight"
                assert ctx.get(pe.act_out) == act_out[i], f"cell {i} activation"
                assert ctx.get(pe.psum_out) == psum_out[i], f"cell {i} partial sum"

    simulate(dut, testbench)
    return counts


@pytest.mark.parametrize("n", [1, 3])
def test_pe_multiply_accumulate_wraps_holds_and_shifts(n):
    counts = _run_column(n, seed=n, cycles=400)
    # The random run really wrapped, stalled and shifted.
    assert counts["wrapped"] > 0
    assert counts["stalled"] > 0
    assert counts["shifts"] > 0


def test_pe_weight_chain_then_multiply():
    # Shift three weights down a column (with stalls in between), then multiply:
    # the first weight shifted in ends in the bottom cell.
    dut = Column(3)
    weights = [-256, 255, -7]
    rng = random.Random(5)

    async def testbench(ctx):
        for w in weights:
            for _ in range(rng.randint(0, 3)):
                await ctx.tick()
            ctx.set(dut.weight_in, w)
            ctx.set(dut.weight_shift, 1)
            await ctx.tick()
            ctx.set(dut.weight_shift, 0)
        assert [ctx.get(pe.weight_out) for pe in dut.pes] == weights[::-1]
        acts = [3, -5, 255]
        ctx.set(dut.psum_in, INT32_MAX)
        for i, a in enumerate(acts):
            ctx.set(dut.act_in[i], a)
        ctx.set(dut.en, 1)
        await ctx.tick()
        ctx.set(dut.en, 0)
        # One enabled cycle: each cell added its own product to what was above it then.
        assert ctx.get(dut.pes[0].psum_out) == wrap(INT32_MAX + acts[0] * weights[2], 32)
        for _ in range(rng.randint(1, 4)):   # a stall holds everything
            await ctx.tick()
        assert ctx.get(dut.pes[0].psum_out) == wrap(INT32_MAX + acts[0] * weights[2], 32)
        assert [ctx.get(pe.act_out) for pe in dut.pes] == acts

    simulate(dut, testbench)
