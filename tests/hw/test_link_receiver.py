# amaranth: UnusedElaboratable=no
"""The link receiver (``hw/link_receiver.py``): a sequence of intact frames (with random
idle cycles on the parser's side and random backpressure on the chip's two streams)
gives exactly the command words and data-in beats of the frames it must take, once
each, and counts the duplicates, the frames out of sequence and the rejected ones."""

import pytest
from harness import consumer, producer, simulate

from hw.config import NpuConfig
from hw.link_protocol import FrameType
from hw.link_receiver import LinkReceiver

CONFIG = NpuConfig(rows=2, cols=2, data_bytes=2)


def words(*values):
    return b"".join(v.to_bytes(8, "little") for v in values)


def frames():
    data = bytes(range(16))
    return [
        (FrameType.RESET, 0, b""),
        (FrameType.COMMANDS, 1, words(0x1111, 0x2222, 0x3333)),
        (FrameType.DATA, 2, data),
        (FrameType.COMMANDS, 1, words(0x9999)),            # a duplicate: not executed
        (FrameType.DATA, 5, b"\xee" * 4),                  # beyond the expected: nak
        (FrameType.COMMANDS, 3, b"\x01" * 5),              # not whole words: rejected
        (FrameType.STATUS, 77, b""),                       # a request, outside the sequence
        (FrameType.COMMANDS, 3, words(0x4444, 0x5555)),
        (FrameType.ACK, 0, bytes([32, 0, 16, 0])),         # the host's: results_limit 32
        (FrameType.DATA, 4, b"\x01\x02"),
    ], [0x1111, 0x2222, 0x3333, 0x4444, 0x5555], \
        [int.from_bytes(data[i:i + 2], "little") for i in range(0, 16, 2)] + [0x0201]


@pytest.mark.parametrize("probability", [0.0, 0.5])
def test_receiver_takes_each_frame_once(probability):
    sequence, expected_words, expected_beats = frames()
    dut = LinkReceiver(config=CONFIG)
    headers = [{"type": t, "seq": s, "length": len(p)} for t, s, p in sequence]
    payload = b"".join(p for _, _, p in sequence)
    got_words, got_beats, strobes = [], [], {"ack": 0, "nak": 0, "status_request": 0,
                                             "host_ack": 0}

    async def monitor(ctx):
        names = tuple(strobes)
        async for _, _, *values in ctx.tick().sample(*(getattr(dut, n) for n in names)):
            for name, value in zip(names, values, strict=True):
                strobes[name] += int(value)

    simulate(dut,
             producer(dut.header, headers, seed=1, probability=probability),
             producer(dut.payload, payload, seed=2, probability=probability),
             consumer(dut.commands, len(expected_words), got_words, seed=3,
                      probability=probability),
             consumer(dut.data_in, len(expected_beats), got_beats, seed=4,
                      probability=probability),
             background=(monitor,))
    assert [int(w) for w in got_words] == expected_words
    assert [int(b) for b in got_beats] == expected_beats
    # RESET, 1, 2, 3, 4 taken and acknowledged; the duplicate acknowledged again.
    assert strobes == {"ack": 6, "nak": 1, "status_request": 1, "host_ack": 1}


def test_receiver_counters_and_state():
    sequence, expected_words, expected_beats = frames()
    dut = LinkReceiver(config=CONFIG)
    headers = [{"type": t, "seq": s, "length": len(p)} for t, s, p in sequence]
    payload = b"".join(p for _, _, p in sequence)
    seen = {}

    async def check(ctx):
        for _ in range(400):
            await ctx.tick()
        for name in ("frames", "duplicates", "out_of_sequence", "rejected", "expected",
                     "results_limit", "commands_credit", "data_credit"):
            seen[name] = ctx.get(getattr(dut, name))

    simulate(dut, producer(dut.header, headers, seed=5), producer(dut.payload, payload, seed=6),
             check)
    # Nothing took the words and beats: the credits show the room left.
    assert seen == {"frames": 5, "duplicates": 1, "out_of_sequence": 1, "rejected": 1,
                    "expected": 5, "results_limit": 32,
                    "commands_credit": 256 - 8 * len(expected_words),
                    "data_credit": 1024 - 2 * len(expected_beats)}


def test_receiver_wrong():
    with pytest.raises(ValueError, match="commands_room must be at least 256 bytes"):
        LinkReceiver(config=CONFIG, commands_room=64)
    with pytest.raises(TypeError, match="data_room must be an integer number of bytes, "
                                        "not 1.5"):
        LinkReceiver(config=CONFIG, data_room=1.5)
