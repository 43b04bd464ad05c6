"""The processing element and its two weight banks against a register-level Python model.

Verifies ``hw/pe.py``: the multiply-accumulate in ``PE_LATENCY`` stages (operands and
the weight of the activation's bank registered, then their product, then
``psum_in + product`` into ``psum_out``) wraps at int32 and uses the bank its
activation names; ``act_in`` and ``act_bank_in`` are registered to ``act_out`` and
``act_bank_out``; ``en`` low holds every pipeline register (the array's stall);
``weight_shift``
moves bank ``weight_bank`` down a chain of cells, independently of ``en``, and
leaves the other bank as it was; ``weight_out`` shows the cell's weight in bank
``weight_bank``; a multiply uses the weight the cell held before a shift of the
same edge.  A column of cells is driven with random operands over their whole
ranges (extremes favoured), random banks, shifts and stalls, and both banks of
every cell are compared with the model after every cycle.  A directed case loads
a tile into bank 1 while every cell keeps multiplying with bank 0.
"""

import random

import pytest
from amaranth import Elaboratable, Module, Signal, signed
from harness import simulate, wrap

from hw.config import ACC_WIDTH, OPERAND_WIDTH
from hw.pe import PE_LATENCY, ProcessingElement

OPERAND_MIN, OPERAND_MAX = -(1 << (OPERAND_WIDTH - 1)), (1 << (OPERAND_WIDTH - 1)) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class Column(Elaboratable):
    """``n`` cells stacked: weights and partial sums flow down, all cells shift the same
    bank, each cell has its own activation and activation bank."""

    def __init__(self, n):
        self.pes = [ProcessingElement() for _ in range(n)]
        self.en = Signal()
        self.weight_shift = Signal()
        self.weight_bank = Signal()
        self.weight_in = Signal(signed(OPERAND_WIDTH))
        self.psum_in = Signal(signed(ACC_WIDTH))
        self.act_in = [Signal(signed(OPERAND_WIDTH), name=f"act_in_{i}") for i in range(n)]
        self.act_bank_in = [Signal(name=f"act_bank_in_{i}") for i in range(n)]

    def elaborate(self, platform):
        m = Module()
        for i, pe in enumerate(self.pes):
            m.submodules[f"pe_{i}"] = pe
            above = self.pes[i - 1] if i else None
            m.d.comb += [
                pe.en.eq(self.en),
                pe.weight_shift.eq(self.weight_shift),
                pe.weight_bank.eq(self.weight_bank),
                pe.weight_in.eq(above.weight_out if above else self.weight_in),
                pe.psum_in.eq(above.psum_out if above else self.psum_in),
                pe.act_in.eq(self.act_in[i]),
                pe.act_bank_in.eq(self.act_bank_in[i]),
            ]
        return m


def _operand(rng):
    return rng.choice([OPERAND_MIN, OPERAND_MAX, -1, 0, 1, rng.randint(OPERAND_MIN, OPERAND_MAX)])


def _psum(rng):
    return rng.choice([INT32_MIN, INT32_MAX, rng.randint(INT32_MIN, INT32_MAX),
                       rng.randint(-1000, 1000)])


async def _banks(ctx, dut):
    """Both banks of every cell, read through ``weight_out`` (leaves ``weight_bank`` at 1)."""
    banks = []
    for b in range(2):
        ctx.set(dut.weight_bank, b)
        banks.append([ctx.get(pe.weight_out) for pe in dut.pes])
    return banks


def _run_column(n, seed, cycles, stall_probability=0.3):
    """Drive a column with random inputs and check it against the model every cycle;
    return how often each case of interest came up."""
    dut = Column(n)
    rng = random.Random(seed)
    counts = {"wrapped": 0, "stalled": 0, "shifts": [0, 0], "shift_other_bank_in_use": 0,
              "shift_same_bank_in_use": 0, "products": [0, 0]}

    async def testbench(ctx):
        weight = [[0] * n, [0] * n]   # weight[bank][cell]
        # The pipeline registers of every cell: stage 1 (activation, its bank, the weight
        # of that bank), stage 2 (product) and stage 3 (partial sum).
        act_out, bank_out, operand_weight = [0] * n, [0] * n, [0] * n
        product, psum_out = [0] * n, [0] * n
        shift_bank = 0
        for _ in range(cycles):
            en = rng.random() >= stall_probability
            shift = rng.random() < 0.4
            if rng.random() < 0.3:
                shift_bank ^= 1                      # runs of shifts into one bank
            weight_in, psum_in = _operand(rng), _psum(rng)
            acts = [_operand(rng) for _ in range(n)]
            act_banks = [rng.randrange(2) for _ in range(n)]
            ctx.set(dut.en, en)
            ctx.set(dut.weight_shift, shift)
            ctx.set(dut.weight_bank, shift_bank)
            ctx.set(dut.weight_in, weight_in)
            ctx.set(dut.psum_in, psum_in)
            for i in range(n):
                ctx.set(dut.act_in[i], acts[i])
                ctx.set(dut.act_bank_in[i], act_banks[i])
            # weight_out shows the shifting bank; it feeds the cell below.
            assert [ctx.get(pe.weight_out) for pe in dut.pes] == weight[shift_bank]
            await ctx.tick()
            # The model: every register takes its input from before the edge.
            if en:
                exact = [psum_in_i + product[i]
                         for i, psum_in_i in enumerate([psum_in] + psum_out[:-1])]
                counts["wrapped"] += sum(not INT32_MIN <= v <= INT32_MAX for v in exact)
                psum_out = [wrap(v, ACC_WIDTH) for v in exact]
                product = [a * w for a, w in zip(act_out, operand_weight, strict=True)]
                operand_weight = [weight[b][i] for i, b in enumerate(act_banks)]
                act_out, bank_out = acts, act_banks
                for b in act_banks:
                    counts["products"][b] += 1
                if shift:
                    counts["shift_other_bank_in_use"] += shift_bank ^ 1 in act_banks
                    counts["shift_same_bank_in_use"] += shift_bank in act_banks
            else:
                counts["stalled"] += 1
            if shift:
                weight[shift_bank] = [weight_in] + weight[shift_bank][:-1]
                counts["shifts"][shift_bank] += 1
            assert await _banks(ctx, dut) == weight, "weight banks"
            for i, pe in enumerate(dut.pes):
                assert ctx.get(pe.act_out) == act_out[i], f"cell {i} activation"
                assert ctx.get(pe.act_bank_out) == bank_out[i], f"cell {i} activation bank"
                assert ctx.get(pe.psum_out) == psum_out[i], f"cell {i} partial sum"

    simulate(dut, testbench)
    return counts


@pytest.mark.parametrize("n", [1, 3])
def test_pe_multiply_accumulate_with_two_banks(n):
    counts = _run_column(n, seed=n, cycles=500)
    # The random run really wrapped, stalled, shifted and multiplied with both banks,
    # shifting one bank both while the other and while the same one multiplied.
    assert counts["wrapped"] > 0
    assert counts["stalled"] > 0
    assert min(counts["shifts"]) > 0 and min(counts["products"]) > 0
    assert counts["shift_other_bank_in_use"] > 0 and counts["shift_same_bank_in_use"] > 0


def test_pe_loads_one_bank_while_the_other_multiplies():
    # Tile A in bank 0; tile B shifts into bank 1 (with stalls in between) while every
    # cell multiplies with bank 0 each cycle; then the activations switch to bank 1.
    dut = Column(3)
    tile_a, tile_b = [-256, 255, -7], [17, -1, 128]   # first shifted in ends at the bottom
    rng = random.Random(5)
    psum_in = INT32_MAX

    async def shift(ctx, bank, w):
        ctx.set(dut.weight_bank, bank)
        ctx.set(dut.weight_in, w)
        ctx.set(dut.weight_shift, 1)
        await ctx.tick()
        ctx.set(dut.weight_shift, 0)

    def column_sum(acts, weights):
        """The bottom cell's partial sum once a wavefront has gone down the column."""
        return wrap(psum_in + sum(a * w for a, w in zip(acts, weights, strict=True)), 32)

    async def testbench(ctx):
        for w in tile_a:
            await shift(ctx, 0, w)
        assert (await _banks(ctx, dut))[0] == tile_a[::-1]
        ctx.set(dut.psum_in, psum_in)
        ctx.set(dut.en, 1)
        acts = [3, -5, 255]
        for i, a in enumerate(acts):
            ctx.set(dut.act_in[i], a)
            ctx.set(dut.act_bank_in[i], 0)
        # With the inputs held, the bottom cell's sum is whole once the wavefront has
        # gone down the column, one cycle per cell after the first cell's stages.
        settle = len(acts) - 1 + PE_LATENCY
        for _ in range(settle):
            await ctx.tick()
        assert ctx.get(dut.pes[2].psum_out) == column_sum(acts, tile_a[::-1])
        for w in tile_b:
            for _ in range(rng.randint(0, 2)):
                await ctx.tick()
            await shift(ctx, 1, w)
            # The same activations every cycle: the bottom cell holds the bank-0 sum.
            assert ctx.get(dut.pes[2].psum_out) == column_sum(acts, tile_a[::-1])
        assert await _banks(ctx, dut) == [tile_a[::-1], tile_b[::-1]]
        assert [ctx.get(pe.act_bank_out) for pe in dut.pes] == [0, 0, 0]
        for i in range(3):
            ctx.set(dut.act_bank_in[i], 1)
        for _ in range(settle - 1):
            await ctx.tick()
        # One cycle short of the whole wavefront the bottom cell still holds bank 0's sum.
        assert ctx.get(dut.pes[2].psum_out) != column_sum(acts, tile_b[::-1])
        await ctx.tick()
        assert ctx.get(dut.pes[2].psum_out) == column_sum(acts, tile_b[::-1])
        assert [ctx.get(pe.act_bank_out) for pe in dut.pes] == [1, 1, 1]
        ctx.set(dut.en, 0)
        for _ in range(rng.randint(1, 4)):   # a stall holds everything
            await ctx.tick()
        assert ctx.get(dut.pes[2].psum_out) == column_sum(acts, tile_b[::-1])
        assert [ctx.get(pe.act_out) for pe in dut.pes] == acts

    simulate(dut, testbench)
