# amaranth: UnusedElaboratable=no
"""The UART (``hw/uart.py``, ``hw/uart_tx.py``, ``hw/uart_rx.py``).

The transmitter's line is decoded in Python bit by bit (every bit exactly ``divisor``
cycles, start low, data least significant first, stop high); the receiver is fed by a
Python bit-banger (bytes, a low stop bit, glitches shorter than half a bit, a break, an
overrun); and a transmitter drives a receiver for random bytes, with random idle cycles
on the transmitter's input and random backpressure on the receiver's output, at equal
divisors and at divisors 3 % apart.
"""

import random

import pytest
from amaranth import Elaboratable, Module
from harness import consumer, producer, simulate
from streams import StreamStalls, stream_get

from hw.link_protocol import COUNTER_WIDTH
from hw.uart import MAX_BAUD_ERROR, MIN_DIVISOR, uart_divisor
from hw.uart_rx import UartRx
from hw.uart_tx import UartTx


def frame_bits(byte, stop=1):
    return [0] + [byte >> i & 1 for i in range(8)] + [stop]


async def bit_bang(ctx, line, bits, divisor):
    for bit in bits:
        ctx.set(line, bit)
        for _ in range(divisor):
            await ctx.tick()


class Loopback(Elaboratable):
    def __init__(self, tx_divisor, rx_divisor):
        self.tx = UartTx(divisor=tx_divisor)
        self.rx = UartRx(divisor=rx_divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


@pytest.mark.parametrize("divisors", [(4, 4), (5, 5), (16, 16), (33, 32), (32, 33)],
                         ids=lambda d: f"tx{d[0]}-rx{d[1]}")
def test_uart_loopback(divisors):
    rng = random.Random(sum(divisors))
    sent = rng.randbytes(150) + bytes([0x00, 0xFF, 0x55, 0xAA])
    dut = Loopback(*divisors)
    received = []
    # Backpressure up to a few cycles at a time: less than a byte's time on the line, so
    # no byte may be lost.
    simulate(dut, producer(dut.tx.data, sent, seed=1, probability=0.5),
             consumer(dut.rx.data, len(sent), received, seed=2, probability=0.5))
    assert bytes(received) == sent


@pytest.mark.parametrize("divisor", [4, 7, 10])
def test_uart_tx_line(divisor):
    rng = random.Random(divisor)
    sent = rng.randbytes(40)
    dut = UartTx(divisor=divisor)
    decoded = []
    back_to_back = []

    async def decode(ctx):
        idle = 0
        while len(decoded) < len(sent):
            _, _, line = await ctx.tick().sample(dut.tx)
            if line:
                idle += 1
                continue
            back_to_back.append(idle == 0)
            levels = [line]
            for _ in range(10 * divisor - 1):
                _, _, line = await ctx.tick().sample(dut.tx)
                levels.append(line)
            bits = [levels[i * divisor:(i + 1) * divisor] for i in range(10)]
            assert all(len(set(b)) == 1 for b in bits), f"a bit of {divisor} cycles changed"
            bits = [b[0] for b in bits]
            assert bits[0] == 0 and bits[9] == 1
            decoded.append(sum(bit << i for i, bit in enumerate(bits[1:9])))
            idle = 0

    simulate(dut, producer(dut.data, sent, seed=3, probability=0.4), decode)
    assert bytes(decoded) == sent
    assert not back_to_back[0] and any(back_to_back[1:]), "no back-to-back bytes were tried"


def test_uart_rx_errors():
    divisor = 12
    dut = UartRx(divisor=divisor)
    received = []
    expected = b"\x3d\xa7\x00\xff\x82"

    async def drive(ctx):
        await bit_bang(ctx, dut.rx, [1, 1], divisor)
        await bit_bang(ctx, dut.rx, frame_bits(expected[0]), divisor)
        # A framing error: the stop bit low, then the line idle again.
        await bit_bang(ctx, dut.rx, frame_bits(0x5A, stop=0) + [1], divisor)
        await bit_bang(ctx, dut.rx, frame_bits(expected[1]), divisor)
        # Glitches: low for less than half a bit.
        for width in (1, 2, divisor // 2 - 2):
            ctx.set(dut.rx, 0)
            for _ in range(width):
                await ctx.tick()
            await bit_bang(ctx, dut.rx, [1], divisor)
        await bit_bang(ctx, dut.rx, frame_bits(expected[2]), divisor)
        # A break: the line low for many bytes' time counts one framing error.
        await bit_bang(ctx, dut.rx, [0] * 40 + [1], divisor)
        for byte in expected[3:]:
            await bit_bang(ctx, dut.rx, frame_bits(byte), divisor)
        await bit_bang(ctx, dut.rx, [1], divisor)

    async def take(ctx):
        stalls = StreamStalls(seed=4, probability=0.4)
        for _ in expected:
            received.append(await stream_get(ctx, dut.data, stalls))
        for _ in range(3 * divisor):
            await ctx.tick()
        assert ctx.get(dut.framing_errors) == 2
        assert ctx.get(dut.overruns) == 0
        assert not ctx.get(dut.data.valid), "a glitch was taken for a byte"

    simulate(dut, drive, take)
    assert bytes(received) == expected


def test_uart_rx_overrun():
    divisor = 6
    dut = UartRx(divisor=divisor)

    async def testbench(ctx):
        for byte in (0x11, 0x22, 0x33):
            await bit_bang(ctx, dut.rx, frame_bits(byte), divisor)
        await bit_bang(ctx, dut.rx, [1], divisor)
        assert ctx.get(dut.overruns) == 2
        # The first byte waited; the later ones were dropped.
        assert await stream_get(ctx, dut.data) == 0x11
        await ctx.tick()
        assert not ctx.get(dut.data.valid)
        await bit_bang(ctx, dut.rx, frame_bits(0x44) + [1], divisor)
        assert await stream_get(ctx, dut.data) == 0x44
        assert ctx.get(dut.framing_errors) == 0

    simulate(dut, testbench)


def test_uart_rx_counters_saturate():
    divisor = 4
    dut = UartRx(divisor=divisor)
    top = (1 << COUNTER_WIDTH) - 1

    async def testbench(ctx):
        # Start from just below the top, as a long run would.
        ctx.set(dut.framing_errors, top - 1)
        for _ in range(3):
            await bit_bang(ctx, dut.rx, frame_bits(0x0F, stop=0) + [1], divisor)
        assert ctx.get(dut.framing_errors) == top

    simulate(dut, testbench)


@pytest.mark.parametrize("clk, baud", [(12e6, 3e6), (48e6, 3e6), (25e6, 115200),
                                       (12e6, 115200), (50e6, 1e6)])
def test_uart_divisor(clk, baud):
    divisor = uart_divisor(clk_frequency=clk, baud_rate=baud)
    assert divisor >= MIN_DIVISOR
    assert abs(clk / divisor - baud) / baud < MAX_BAUD_ERROR
    # No other divisor is nearer.
    assert all(abs(clk / d - baud) >= abs(clk / divisor - baud)
               for d in (divisor - 1, divisor + 1))


def test_uart_divisor_wrong():
    # 25 MHz / 8 = 3.125 Mbaud, 4.2 % above 3 Mbaud.
    with pytest.raises(ValueError, match=r"clk_frequency 2.5e\+07 Hz cannot make baud_rate "
                                         r"3e\+06: the nearest divisor 8 gives 3.125e\+06 "
                                         r"baud, 4.17 % off"):
        uart_divisor(clk_frequency=25e6, baud_rate=3e6)
    with pytest.raises(ValueError, match="clk_frequency 1e\\+07 Hz is too slow for "
                                         "baud_rate 3e\\+06"):
        uart_divisor(clk_frequency=10e6, baud_rate=3e6)
    with pytest.raises(TypeError, match="clk_frequency must be a positive number of Hz, "
                                        "not '12e6'"):
        uart_divisor(clk_frequency="12e6", baud_rate=3e6)
    with pytest.raises(TypeError, match="baud_rate must be a positive number of Hz, not 0"):
        uart_divisor(clk_frequency=12e6, baud_rate=0)
    with pytest.raises(TypeError):
        uart_divisor(12e6, 3e6)


@pytest.mark.parametrize("component", [UartTx, UartRx])
def test_uart_divisor_component_wrong(component):
    with pytest.raises(ValueError, match=f"divisor must be at least {MIN_DIVISOR} clock "
                                         f"cycles per bit, not 3"):
        component(divisor=3)
    with pytest.raises(TypeError, match="divisor must be an integer, not 8.0"):
        component(divisor=8.0)
    with pytest.raises(TypeError, match="divisor must be an integer, not True"):
        component(divisor=True)
