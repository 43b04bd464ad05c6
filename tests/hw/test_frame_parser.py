# amaranth: UnusedElaboratable=no
"""The frame parser (``hw/frame_parser.py``) on frames made by ``encode_frame``.

Random intact frames among sync-free garbage all come out, header then payload, with
random idle cycles on the byte stream and random backpressure on both outputs; frames
broken in each way (a flipped payload or CRC bit, an unknown type, a length above the
largest, a dropped byte, a cut) are dropped, never handed on, and each is counted once,
in its own counter, while the intact frames around them still come out.  Last, the
whole receive path: a UART transmitter, the line, the receiver and the parser.
"""

import itertools
import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib.wiring import connect
from harness import simulate, wait_for
from streams import StreamStalls, stream_get, stream_put

from hw.frame_parser import FrameParser
from hw.link_protocol import (
    CRC_BYTES,
    HEADER_BYTES,
    MAX_PAYLOAD,
    SEQUENCE_MODULUS,
    SYNC,
    Frame,
    FrameType,
    encode_frame,
)
from hw.uart_rx import UartRx
from hw.uart_tx import UartTx

TIMEOUT = 64


def sync_free_frame(rng):
    """A random frame with no sync byte after its first, so that a parser that drops it
    finds no false frame inside it and the counters are exact."""
    while True:
        length = rng.choice([0, 1, 8, rng.randrange(MAX_PAYLOAD + 1), MAX_PAYLOAD])
        frame = Frame(rng.choice(list(FrameType)), rng.randrange(SEQUENCE_MODULUS),
                      bytes(rng.choice([b for b in range(256) if b != SYNC])
                            for _ in range(length)))
        raw = encode_frame(frame.type, frame.seq, frame.payload)
        if SYNC not in raw[1:] and (frame.seq, frame.type) != (SYNC, SYNC):
            return frame, bytearray(raw)


def garbage(rng, n):
    return bytes(rng.choice([b for b in range(256) if b != SYNC]) for _ in range(n))


def run(segments, frame_count, *, seed, probability=0.3):
    """Feed ``segments`` (bytes, or an int: that many silent cycles) to a parser; take
    ``frame_count`` frames.  Returns the frames and the counters at the end."""
    dut = FrameParser(timeout_cycles=TIMEOUT)
    frames, counters = [], {}

    async def feed(ctx):
        stalls = StreamStalls(seed=seed, probability=probability)
        for segment in segments:
            if isinstance(segment, int):
                for _ in range(segment):
                    await ctx.tick()
            else:
                for byte in segment:
                    await stream_put(ctx, dut.bytes, byte, stalls)

    async def take(ctx):
        stalls = StreamStalls(seed=seed + 1, probability=probability)
        for _ in range(frame_count):
            header = await stream_get(ctx, dut.header, stalls)
            payload = bytes([await stream_get(ctx, dut.payload, stalls)
                             for _ in range(header.length)])
            frames.append(Frame(FrameType(header.type), header.seq, payload))
        # Whatever is still to come must not be a frame.
        for _ in range(2 * TIMEOUT):
            assert not ctx.get(dut.header.valid), "a frame that should have been dropped"
            await ctx.tick()

    async def finish(ctx):
        await feed(ctx)
        for _ in range(2 * TIMEOUT):
            await ctx.tick()
        for name in ("header_errors", "crc_errors", "truncated"):
            counters[name] = ctx.get(getattr(dut, name))

    simulate(dut, finish, take)
    return frames, counters


@pytest.mark.parametrize("probability", [0.2, 0.6])
def test_parser_passes_intact_frames(probability):
    rng = random.Random(int(probability * 10))
    segments, frames = [], []
    for _ in range(25):
        if rng.random() < 0.4:
            segments.append(garbage(rng, rng.randrange(1, 6)))
        frame, raw = sync_free_frame(rng)
        frames.append(frame)
        segments.append(bytes(raw))
    got, counters = run(segments, len(frames), seed=3, probability=probability)
    assert got == frames
    assert counters == {"header_errors": 0, "crc_errors": 0, "truncated": 0}


def flip_bit(raw, rng, i):
    raw[i] ^= 1 << rng.randrange(8)


_crc_turn = itertools.count()

#: How each damage changes a frame's bytes, and the counter it must raise.
DAMAGES = {
    "flip": (lambda raw, rng: flip_bit(raw, rng, rng.randrange(HEADER_BYTES, len(raw))),
             "crc_errors"),
    # Each of the CRC's bytes in turn, the last included.
    "crc": (lambda raw, rng: flip_bit(raw, rng, len(raw) - 1 - next(_crc_turn) % CRC_BYTES),
            "crc_errors"),
    "type": (lambda raw, rng: raw.__setitem__(1, 0x00), "header_errors"),
    "length": (lambda raw, rng: raw.__setitem__(4, 0x7F), "header_errors"),
    "drop": (lambda raw, rng: raw.__delitem__(rng.randrange(HEADER_BYTES, len(raw))),
             "truncated"),
    "cut": (lambda raw, rng: raw.__delitem__(slice(rng.randrange(1, len(raw)), None)),
            "truncated"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_parser_drops_broken_frames(damage):
    rng = random.Random(damage)
    change, counter = DAMAGES[damage]
    segments, intact, broken = [], [], 0
    for _ in range(16):
        frame, raw = sync_free_frame(rng)
        if rng.random() < 0.5:
            change(raw, rng)
            broken += 1
            # Silence after a broken frame: what it is short of never comes, and the
            # parser gives up on it before the next one starts.
            segments += [bytes(raw), 2 * TIMEOUT]
        else:
            intact.append(frame)
            segments.append(bytes(raw))
    assert broken
    got, counters = run(segments, len(intact), seed=5)
    assert got == intact
    expected = {"header_errors": 0, "crc_errors": 0, "truncated": 0, counter: broken}
    assert counters == expected


def test_parser_wrong():
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(TypeError, match="timeout_cycles must be a positive integer"):
            FrameParser(timeout_cycles=bad)


class ReceivePath(Elaboratable):
    """A UART transmitter on the line of a receiver that feeds a frame parser."""

    def __init__(self, divisor):
        self.tx = UartTx(divisor=divisor)
        self.rx = UartRx(divisor=divisor)
        self.parser = FrameParser(timeout_cycles=TIMEOUT * divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx, m.submodules.parser = self.tx, self.rx, self.parser
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        connect(m, self.rx.data, self.parser.bytes)
        return m


def test_parser_behind_uart():
    """Stop and wait, as the link's acknowledgements will pace it: the next frame goes
    out once the previous one has been taken, so the receiver never overruns."""
    rng = random.Random(7)
    divisor = 4
    dut = ReceivePath(divisor)
    frames = []
    for _ in range(6):
        length = rng.choice([0, 8, 40])
        frames.append(Frame(rng.choice(list(FrameType)), rng.randrange(SEQUENCE_MODULUS),
                            rng.randbytes(length)))
    got = []

    async def send(ctx):
        stalls = StreamStalls(seed=8, probability=0.3)
        for i, frame in enumerate(frames):
            for byte in encode_frame(frame.type, frame.seq, frame.payload):
                await stream_put(ctx, dut.tx.data, byte, stalls)
            await wait_for(ctx, lambda i=i: len(got) > i)

    async def take(ctx):
        stalls = StreamStalls(seed=9, probability=0.3)
        for _ in frames:
            header = await stream_get(ctx, dut.parser.header, stalls)
            payload = bytes([await stream_get(ctx, dut.parser.payload, stalls)
                             for _ in range(header.length)])
            got.append(Frame(FrameType(header.type), header.seq, payload))
        assert ctx.get(dut.rx.overruns) == 0 and ctx.get(dut.rx.framing_errors) == 0
        assert ctx.get(dut.parser.crc_errors) == 0 and ctx.get(dut.parser.header_errors) == 0

    simulate(dut, send, take)
    assert got == frames
