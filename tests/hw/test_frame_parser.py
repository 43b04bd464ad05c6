# amaranth: UnusedElaboratable=no
"""The frame parser (``hw/frame_parser.py``) on frames made by ``encode_frame``.

Random intact frames among sync-free garbage all come out, header then payload, with
random idle cycles on the byte stream and random backpressure on both outputs; frames
broken in each way (a flipped payload or CRC bit, an unknown type, a length above the
largest, a dropped byte, a cut) are dropped, never handed on, and each is counted once,
in its own counter, while the intact frames around them still come out.
"""

import itertools
import random

import pytest
from harness import simulate
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
