"""The frames of the serial host link, defined once.

The link's gateware (its frame parser and framer) and the host's serial backend both
read this module: frame types, field widths, the sync byte, the largest payload, the CRC,
the acknowledgement's payload and the link's status record.  :func:`encode_frame` and
:class:`FrameDecoder` are the host's side in Python; the tests use them too.

Frame
-----
Every frame, in either direction, is::

    sync  type  seq  length (2, little endian)  payload (length bytes)  crc (4, little endian)

``sync`` is :data:`SYNC`; ``type`` a :class:`FrameType`; ``seq`` the sender's sequence
number for this frame, modulo 256; ``length`` at most :data:`MAX_PAYLOAD`; ``crc`` the
:data:`CRC` (CRC-32, as ``zlib.crc32``) of every byte from ``type`` to the end of the
payload.  Bytes are not stuffed: a receiver finds a frame by its sync byte, a header
whose type and length are possible, and its CRC.

CRC-32 rather than CRC-16: a serial line that drops a byte shifts the rest of the frame,
an error no Hamming-distance bound covers, and a receiver hunting for sync bytes in a
payload tries a false frame every 256 bytes or so; either passes a CRC-16 once in 65536
tries and a CRC-32 once in 4.3e9.  A false frame that passes would execute a wrong
command or load a wrong weight without any sign, while the cost is small: 16 more
flip-flops and wider XORs in each direction, and 2 more bytes per frame.

Exchange
--------
The host sends ``COMMANDS`` (whole 8-byte command words, least significant byte first),
``DATA`` (data-in bytes) and ``STATUS`` (empty: a request) frames with sequence numbers
0, 1, 2, ... (after reset, or after a ``RESET`` frame, which is sequence number 0 of a
new exchange).  The chip answers each frame that arrives intact:

* the expected sequence number: it acknowledges it (``ACK`` with that ``seq``) once the
  payload is in its buffers, then executes it; the next is expected;
* the one before (a duplicate: the acknowledgement was lost): it acknowledges it again
  and does not execute it twice;
* any other: it drops it without answer (out of sequence), as it drops a frame that
  fails its CRC or is cut short.

The host sends at most the frames the last acknowledgement's ``credit`` allows beyond
it (flow control: the chip's frame buffers never overrun) and sends again, from the
first unacknowledged frame, when no acknowledgement came in time.  The chip sends its
data-out bytes in ``RESULTS`` frames and its answer to a ``STATUS`` request in a
``STATUS`` frame (the :data:`LINK_STATUS_FIELDS` record), numbered by its own sequence,
and the host acknowledges them the same way.
"""

import enum
import operator
from dataclasses import dataclass

from amaranth.lib import data

from .crc import CRC_32
from .isa import Field

__all__ = ["FrameType", "SYNC", "MAX_PAYLOAD", "CRC", "HEADER_FIELDS", "HEADER_BYTES",
           "CRC_BYTES", "SEQUENCE_MODULUS", "ACK_FIELDS", "LINK_STATUS_FIELDS",
           "COUNTER_WIDTH", "header_layout", "frame_header_layout", "link_status_layout",
           "Frame", "encode_frame", "FrameDecoder"]


class FrameType(enum.IntEnum):
    """What a frame carries (its ``type`` byte)."""
    # Host to chip.
    COMMANDS = 0x01     #: command words, 8 bytes each
    DATA = 0x02         #: data-in bytes
    RESET = 0x03        #: empty; starts a new exchange: sequence numbers from 0 again
    # Chip to host.
    RESULTS = 0x11      #: data-out bytes
    # Both ways.
    STATUS = 0x21       #: host to chip empty (a request); chip to host the status record
    ACK = 0x22          #: acknowledges the frame numbered ``seq``; payload ACK_FIELDS


#: The first byte of every frame.  Not stuffed in payloads, so any value would do; this
#: one has both halves different and is no ASCII character a terminal sends.
SYNC = 0xA5
#: The largest payload: 32 command words, or one 256-byte block of data.
MAX_PAYLOAD = 256
#: The CRC of a frame (see the module's documentation for why CRC-32).
CRC = CRC_32
CRC_BYTES = CRC.width // 8
#: Sequence numbers count modulo this.
SEQUENCE_MODULUS = 256

#: The header, in the order it is sent; each field a whole number of bytes, sent least
#: significant byte first.
HEADER_FIELDS = (
    Field("sync", 8, doc="SYNC"),
    Field("type", 8, doc="a FrameType"),
    Field("seq", 8, doc="sequence number modulo SEQUENCE_MODULUS"),
    Field("length", 16, doc="payload bytes, at most MAX_PAYLOAD"),
)
HEADER_BYTES = sum(f.width for f in HEADER_FIELDS) // 8
assert 1 << HEADER_FIELDS[2].width == SEQUENCE_MODULUS
assert MAX_PAYLOAD < 1 << HEADER_FIELDS[3].width

#: The payload of an ``ACK``.
ACK_FIELDS = (
    Field("credit", 8, doc="frames the sender may send beyond the acknowledged one"),
)

#: Width of every counter of the link's status record; a counter stops at its largest
#: value rather than wrap, so a reading never hides errors.
COUNTER_WIDTH = 16
#: The payload of a chip's ``STATUS`` frame, little endian, least significant field first.
LINK_STATUS_FIELDS = (
    Field("frames", COUNTER_WIDTH, doc="frames received intact and executed"),
    Field("duplicates", COUNTER_WIDTH, doc="duplicate frames acknowledged again, not executed"),
    Field("out_of_sequence", COUNTER_WIDTH, doc="intact frames with another sequence number"),
    Field("crc_errors", COUNTER_WIDTH, doc="frames that failed their CRC"),
    Field("header_errors", COUNTER_WIDTH, doc="sync bytes followed by an impossible header"),
    Field("truncated", COUNTER_WIDTH, doc="frames cut short by a silent line"),
    Field("framing_errors", COUNTER_WIDTH, doc="UART bytes with a low stop bit"),
    Field("overruns", COUNTER_WIDTH, doc="UART bytes lost because the previous one waited"),
    Field("retransmissions", COUNTER_WIDTH, doc="chip frames the host asked for again"),
)


def _layout(fields):
    return data.StructLayout({f.name: f.width for f in fields})


def header_layout():
    """The header as an Amaranth layout (the bytes in the order they arrive)."""
    return _layout(HEADER_FIELDS)


def frame_header_layout():
    """A frame's header without its sync byte, as the link's gateware passes it on:
    ``type``, ``seq``, ``length``."""
    return _layout(f for f in HEADER_FIELDS if f.name != "sync")


def link_status_layout():
    """The link's status record as an Amaranth layout."""
    return _layout(LINK_STATUS_FIELDS)


def _pack(fields, values):
    result = bytearray()
    for f in fields:
        result += f.check(values[f.name], "frame").to_bytes(f.width // 8, "little")
    return bytes(result)


@dataclass(frozen=True)
class Frame:
    """A frame's contents: ``type`` (a :class:`FrameType`), ``seq`` and ``payload``."""
    type: FrameType
    seq: int
    payload: bytes = b""


def encode_frame(type, seq, payload=b""):
    """The bytes of one frame.

    Parameters
    ----------
    type : FrameType
    seq : int
        Sequence number, ``0 <= seq < SEQUENCE_MODULUS``.
    payload : bytes
        At most :data:`MAX_PAYLOAD` bytes.

    Raises
    ------
    TypeError
        If ``type`` is not a FrameType, ``seq`` not an integer or ``payload`` not bytes.
    ValueError
        If ``seq`` or the payload's length is out of range.
    """
    if not isinstance(type, FrameType):
        raise TypeError(f"type must be a FrameType, not {type!r}")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, not {payload!r}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload must be at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    try:
        seq = operator.index(seq)
    except TypeError:
        raise TypeError(f"seq must be an integer, not {seq!r}") from None
    if not 0 <= seq < SEQUENCE_MODULUS:
        raise ValueError(f"seq must be in 0..{SEQUENCE_MODULUS - 1}, not {seq!r}")
    header = _pack(HEADER_FIELDS, {"sync": SYNC, "type": type, "seq": seq,
                                   "length": len(payload)})
    body = header[1:] + payload
    return bytes(header[:1]) + body + CRC.compute(body).to_bytes(CRC_BYTES, "little")


class FrameDecoder:
    """Finds frames in a byte stream (the host's receiver).

    Bytes come in any pieces through :meth:`feed`.  A sync byte starts a candidate frame;
    a candidate whose header is impossible (an unknown type, a length above
    :data:`MAX_PAYLOAD`) or whose CRC fails is dropped and the search goes on from the
    byte after its sync byte, so a frame that starts inside a broken one is still found.
    Bytes before a sync byte are skipped.

    Attributes
    ----------
    header_errors, crc_errors, skipped : int
        Candidates dropped for their header, for their CRC, and bytes skipped outside
        any frame.
    """

    def __init__(self):
        self._buffer = bytearray()
        self.header_errors = 0
        self.crc_errors = 0
        self.skipped = 0

    @property
    def pending(self):
        """Bytes held for a frame that has not arrived in full."""
        return len(self._buffer)

    def feed(self, data):
        """Take ``data`` (bytes) and return the frames it completes, in order."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {data!r}")
        buffer = self._buffer
        buffer += data
        frames = []
        while buffer:
            start = buffer.find(SYNC)
            if start < 0:
                self.skipped += len(buffer)
                buffer.clear()
                break
            self.skipped += start
            del buffer[:start]
            if len(buffer) < HEADER_BYTES:
                break
            length = int.from_bytes(buffer[3:5], "little")
            if buffer[1] not in _TYPES or length > MAX_PAYLOAD:
                self.header_errors += 1
                del buffer[:1]
                continue
            end = HEADER_BYTES + length + CRC_BYTES
            if len(buffer) < end:
                break
            body = bytes(buffer[1:HEADER_BYTES + length])
            if CRC.compute(body) != int.from_bytes(buffer[end - CRC_BYTES:end], "little"):
                self.crc_errors += 1
                del buffer[:1]
                continue
            frames.append(Frame(FrameType(buffer[1]), buffer[2], body[HEADER_BYTES - 1:]))
            del buffer[:end]
        return frames


_TYPES = frozenset(FrameType)
