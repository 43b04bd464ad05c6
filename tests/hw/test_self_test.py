# amaranth: UnusedElaboratable=no
"""The self-test host link (``hw/self_test.py``) driving the chip in Amaranth's simulator:
it passes on the golden model's bytes and fails, for the right reason, when they differ.
Every stream pauses at random (``stall_every``)."""

import pytest
from amaranth.sim import Simulator

from boards.self_test_program import self_test_program
from hw import isa
from hw.config import NpuConfig
from hw.host_link import HostLinkSignature, LinkedChip
from hw.self_test import SelfTest, SelfTestFailure

CONFIG = NpuConfig(rows=2, cols=2, act_depth=16, weight_tiles=2, acc_depth=16, data_bytes=2)


@pytest.fixture(scope="module")
def program():
    return self_test_program(CONFIG)


def _run(*, commands, data_in, expected, stall_every=4, max_cycles=4000):
    """Simulate the chip with a self-test; (failure, passed, cycles until it stopped)."""
    link = SelfTest(config=CONFIG, commands=commands, data_in=data_in, expected=expected,
                    stall_every=stall_every)
    dut = LinkedChip(link=link)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    outcome = {}

    async def testbench(ctx):
        cycles = 0
        while ctx.get(dut.leds.running) and cycles < max_cycles:
            await ctx.tick()
            cycles += 1
        outcome.update(failure=ctx.get(link.failure), passed=ctx.get(dut.leds.passed),
                       failed=ctx.get(dut.leds.failed), cycles=cycles)

    sim.add_testbench(testbench)
    sim.run()
    return outcome


def test_passes_on_the_golden_bytes(program):
    outcome = _run(commands=program.commands, data_in=program.data_in,
                   expected=program.expected)
    assert outcome["failure"] == SelfTestFailure.NONE
    assert outcome["passed"] and not outcome["failed"]
    # It stopped because it passed, not because the simulation ran out.
    assert outcome["cycles"] < 4000


def test_one_changed_byte_fails(program):
    expected = bytearray(program.expected)
    expected[len(expected) // 2] ^= 0x10
    outcome = _run(commands=program.commands, data_in=program.data_in,
                   expected=bytes(expected))
    assert outcome["failure"] == SelfTestFailure.MISMATCH
    assert outcome["failed"] and not outcome["passed"]


def test_missing_and_extra_beats_fail(program):
    beat = CONFIG.data_bytes
    longer = _run(commands=program.commands, data_in=program.data_in,
                  expected=program.expected + program.expected[-beat:])
    assert longer["failure"] == SelfTestFailure.MISSING_OUTPUT
    shorter = _run(commands=program.commands, data_in=program.data_in,
                   expected=program.expected[:-beat])
    assert shorter["failure"] == SelfTestFailure.EXTRA_OUTPUT


def test_chip_error_fails(program):
    # A NOP with a reserved bit set: the chip latches RESERVED_BITS.
    bad = isa.INSTRUCTIONS[isa.Opcode.NOP]().encode() | (1 << 63)
    outcome = _run(commands=(bad,) + program.commands, data_in=program.data_in,
                   expected=program.expected)
    assert outcome["failure"] == SelfTestFailure.CHIP_ERROR


def test_self_test_wrong(program):
    good = dict(config=CONFIG, commands=program.commands, data_in=program.data_in,
                expected=program.expected)
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        SelfTest(**{**good, "config": None})
    with pytest.raises(ValueError, match="commands must hold 64-bit unsigned words"):
        SelfTest(**{**good, "commands": [1 << 64]})
    with pytest.raises(TypeError, match="commands must be a sequence of integers"):
        SelfTest(**{**good, "commands": ["nop"]})
    with pytest.raises(ValueError, match="commands must not be empty"):
        SelfTest(**{**good, "commands": []})
    with pytest.raises(ValueError, match="expected must be whole 2-byte beats"):
        SelfTest(**{**good, "expected": b"abc"})
    with pytest.raises(TypeError, match="data_in must be bytes"):
        SelfTest(**{**good, "data_in": [1, 2]})
    with pytest.raises(ValueError, match="stall_every must be a power of two"):
        SelfTest(**good, stall_every=3)
    with pytest.raises(TypeError, match="stall_every must be a power of two or None"):
        SelfTest(**good, stall_every=True)
    with pytest.raises(TypeError, match="timeout_cycles must be a positive integer"):
        SelfTest(**good, timeout_cycles=0)


def test_linked_chip_wrong():
    with pytest.raises(TypeError, match="link must be a component with a chip member"):
        LinkedChip(link=object())


def test_host_link_signature_is_the_slot():
    signature = HostLinkSignature(CONFIG)
    assert signature == HostLinkSignature(CONFIG)
    assert signature != HostLinkSignature(NpuConfig())
    assert set(signature.members) == {"commands", "data_in", "data_out", "reset", "busy",
                                      "error", "error_opcode", "executed", "cycles",
                                      "array_cycles"}
    assert signature.members["data_in"].signature.members["payload"].shape == 16
