"""The serial link's frames (``hw/link_protocol.py``): encoding against the layout it
documents and ``zlib.crc32``, and the decoder on random frames cut into random pieces,
with garbage between them and with frames broken by a flipped bit, a dropped byte or a
cut, each broken frame dropped and counted and every intact one found.
"""

import random
import zlib

import pytest

from hw.link_protocol import (
    CRC_BYTES,
    HEADER_BYTES,
    LINK_STATUS_FIELDS,
    MAX_PAYLOAD,
    SEQUENCE_MODULUS,
    SYNC,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
    header_layout,
    link_status_layout,
)


def random_frame(rng):
    length = rng.choice([0, 1, 8, rng.randrange(MAX_PAYLOAD + 1), MAX_PAYLOAD])
    return Frame(rng.choice(list(FrameType)), rng.randrange(SEQUENCE_MODULUS),
                 rng.randbytes(length))


def feed_in_pieces(decoder, stream, rng):
    frames = []
    i = 0
    while i < len(stream):
        n = rng.randrange(1, 40)
        frames += decoder.feed(stream[i:i + n])
        i += n
    return frames


def test_frame_layout():
    rng = random.Random(0)
    for _ in range(50):
        frame = random_frame(rng)
        raw = encode_frame(frame.type, frame.seq, frame.payload)
        n = len(frame.payload)
        assert len(raw) == HEADER_BYTES + n + CRC_BYTES
        assert raw[0] == SYNC and raw[1] == frame.type and raw[2] == frame.seq
        assert int.from_bytes(raw[3:5], "little") == n
        assert raw[5:5 + n] == frame.payload
        assert int.from_bytes(raw[-4:], "little") == zlib.crc32(raw[1:-4])
    assert header_layout().size == 8 * HEADER_BYTES
    assert link_status_layout().size == sum(f.width for f in LINK_STATUS_FIELDS)


def test_decoder_finds_frames_among_garbage():
    rng = random.Random(1)
    frames = [random_frame(rng) for _ in range(200)]
    stream = bytearray()
    for frame in frames:
        if rng.random() < 0.3:
            # Garbage without a sync byte, so that every skipped byte is counted.
            stream += bytes(rng.choice([b for b in range(256) if b != SYNC])
                            for _ in range(rng.randrange(1, 10)))
        stream += encode_frame(frame.type, frame.seq, frame.payload)
    decoder = FrameDecoder()
    assert feed_in_pieces(decoder, bytes(stream), rng) == frames
    expected_skipped = len(stream) - sum(HEADER_BYTES + len(f.payload) + CRC_BYTES
                                         for f in frames)
    assert (decoder.skipped, decoder.crc_errors, decoder.pending) == (expected_skipped, 0, 0)


@pytest.mark.parametrize("damage", ["flip", "drop", "cut"])
def test_decoder_drops_broken_frames(damage):
    rng = random.Random(damage)
    frames = [random_frame(rng) for _ in range(150)]
    stream, intact = bytearray(), []
    broken = 0
    for frame in frames:
        raw = bytearray(encode_frame(frame.type, frame.seq, frame.payload))
        if rng.random() < 0.4:
            broken += 1
            i = rng.randrange(1, len(raw))      # the sync byte stays: a candidate each
            if damage == "flip":
                raw[i] ^= 1 << rng.randrange(8)
            elif damage == "drop":
                del raw[i]
            else:
                del raw[i:]
        else:
            intact.append(frame)
        stream += raw
    # Every frame ends in time for the decoder to give up on a broken one before it: a
    # final burst of sync-free padding flushes the last candidate.
    stream += bytes(HEADER_BYTES + MAX_PAYLOAD + CRC_BYTES)
    decoder = FrameDecoder()
    found = feed_in_pieces(decoder, bytes(stream), rng)
    # A broken frame may hide no intact one and is never taken for one.
    assert found == intact
    assert decoder.crc_errors + decoder.header_errors >= broken


def test_encode_frame_wrong():
    with pytest.raises(TypeError, match="type must be a FrameType, not 1"):
        encode_frame(1, 0)
    with pytest.raises(TypeError, match="seq must be an integer, not 1.0"):
        encode_frame(FrameType.DATA, 1.0)
    with pytest.raises(ValueError, match="seq must be in 0..255, not 256"):
        encode_frame(FrameType.DATA, 256)
    with pytest.raises(TypeError, match="payload must be bytes, not 'ab'"):
        encode_frame(FrameType.DATA, 0, "ab")
    with pytest.raises(ValueError, match=f"payload must be at most {MAX_PAYLOAD} bytes, "
                                         f"not {MAX_PAYLOAD + 1}"):
        encode_frame(FrameType.DATA, 0, bytes(MAX_PAYLOAD + 1))


def test_decoder_feed_wrong():
    with pytest.raises(TypeError, match="data must be bytes, not 'ab'"):
        FrameDecoder().feed("ab")
