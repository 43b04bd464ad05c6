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
The host sends ``COMMANDS`` (whole 8-byte command words, least significant byte first)
and ``DATA`` (whole data-in beats) frames with sequence numbers 1, 2, 3, ... after a
``RESET`` frame, which is sequence number 0 of a new exchange.  The chip acts on each frame
that arrives intact, in the order they arrive:

* ``RESET`` (any ``seq``, empty): resets the chip as its ``rst`` does (``RESET_STATE``
  of :mod:`hw.isa`), drops whatever the link holds for it (command words, data-in beats,
  results not yet acknowledged), numbers its own frames from 0 again, expects host frame
  1 next and acknowledges ``seq`` 0.  Sent again (its acknowledgement lost) it resets
  again, which changes nothing.
* ``COMMANDS``/``DATA`` with the expected sequence number: if the payload is whole words
  (beats) and fits the room the chip has for that stream, it is copied there and
  acknowledged, and the next number is expected; otherwise it is *rejected* (counted,
  not acknowledged: a host that keeps to the credit never sees this).
* ``FLUSH`` (empty) with the expected sequence number: the data-in bytes the link
  holds for the chip are dropped, and it is acknowledged.  A host sends it at the end
  of a run whose commands left data-in unused (the chip is idle, every command
  executed), so that nothing of one run is taken by the next, as the simulators' host
  loop drops such bytes.
* ``COMMANDS``/``DATA``/``FLUSH`` numbered up to 128 before the expected one: a *duplicate* (its
  acknowledgement was lost): acknowledged again, never executed twice.
* ``COMMANDS``/``DATA``/``FLUSH`` numbered up to 127 beyond the expected one: *out of sequence*
  (a frame before it was lost): dropped, and answered by an acknowledgement of the last
  frame taken with ``nak`` set, so that the host sends again from the one after it at
  once rather than after its timeout.
* ``STATUS`` (empty, any ``seq``): answered by a ``STATUS`` frame with the same ``seq``
  holding :data:`STATUS_FIELDS`, the chip's status and the link's state and counters
  then (:data:`STATUS_SNAPSHOT_FIELDS` at one instant, the rest each whole, at
  or after it).  The request and its answer are outside the sequence (their ``seq`` only tells
  answers apart): a host whose answer is lost asks again.
* ``ACK`` from the host (payload :data:`HOST_ACK_FIELDS`): acknowledges the chip's
  ``RESULTS`` frame ``seq`` (see below).

Acknowledgements are cumulative: an ``ACK`` (payload :data:`ACK_FIELDS`) names the last
frame taken, so every frame before it was taken too, and the chip sends one for the
latest only, however many arrived while its line was busy.  It carries the *credit*, the
bytes of command words and of data-in the chip has room for beyond that frame; the host
sends no more than that beyond it (flow control: the link's buffers never overrun, and
never block, so command words never wait behind data nor data behind command words).
The chip also sends an acknowledgement of its own accord when a credit has grown by
:data:`MAX_PAYLOAD` bytes since the last one it sent.  The ``STATUS`` record carries the
credits and the expected sequence number too.

The chip sends its data-out bytes in ``RESULTS`` frames numbered 0, 1, 2, ... (modulo
256) after a reset, one frame at a time: a frame waits for its acknowledgement (the
host's ``ACK`` with that ``seq``) before the next is sent, and a host ``ACK`` of the frame
before it (the host lacks it) sends it again (a *retransmission*, counted).  A frame
holds at most ``results_limit`` bytes (the host's last ``ACK``; :data:`MAX_PAYLOAD`
after a reset): a host on a noisy line asks for short frames, and a frame sent again is
cut to the limit then.  Every copy of a frame starts at the same byte, so the host's
``ACK`` says how many bytes its copy held (``length``) and the chip drops that many.  A
frame leaves once ``results_limit`` bytes wait or the chip has sent none for a while
(:data:`RESULTS_FLUSH_CYCLES`).

The chip keeps no timer: every timeout is the host's.  A host that hears nothing sends
again what it has not seen acknowledged (its own frames from the first unacknowledged
one, an ``ACK`` of the last ``RESULTS`` frame it has, a ``STATUS`` request).  A run is
complete when the ``STATUS`` record says every command was executed, the chip is idle
and no result byte waits in the chip (``results_pending`` zero, ``results_waiting``
clear): every result has then been acknowledged, so the host holds it.
"""

import enum
import operator
from dataclasses import dataclass

from amaranth.lib import data

from .crc import CRC_32
from .isa import Field

__all__ = ["FrameType", "SYNC", "MAX_PAYLOAD", "CRC", "HEADER_FIELDS", "HEADER_BYTES",
           "CRC_BYTES", "SEQUENCE_MODULUS", "ACK_FIELDS", "HOST_ACK_FIELDS",
           "RESULTS_FLUSH_CYCLES", "LINK_STATUS_FIELDS", "STATUS_FIELDS", "STATUS_BYTES",
           "STATUS_SNAPSHOT_FIELDS",
           "COUNTER_WIDTH", "count_up", "header_layout", "frame_header_layout",
           "link_status_layout",
           "status_record_layout", "ack_layout", "pack_fields", "unpack_fields", "Frame",
           "encode_frame", "FrameDecoder"]


class FrameType(enum.IntEnum):
    """What a frame carries (its ``type`` byte)."""
    # Host to chip.
    COMMANDS = 0x01     #: command words, 8 bytes each
    DATA = 0x02         #: data-in bytes
    RESET = 0x03        #: empty; starts a new exchange: sequence numbers from 0 again
    FLUSH = 0x04        #: empty; drops the data-in bytes the link holds (a run's end)
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

#: The payload of the chip's ``ACK``.
ACK_FIELDS = (
    Field("commands_credit", 16, doc="bytes of command words the chip has room for beyond "
                                     "the acknowledged frame"),
    Field("data_credit", 16, doc="bytes of data-in it has room for beyond it"),
    Field("nak", 8, doc="1: a frame after the acknowledged one arrived out of sequence; "
                        "send again from the one after it"),
)
#: The payload of the host's ``ACK`` (of a ``RESULTS`` frame).
HOST_ACK_FIELDS = (
    Field("results_limit", 16, doc="the longest RESULTS payload the host wants, "
                                   "1..MAX_PAYLOAD"),
    Field("length", 16, doc="the payload bytes of the acknowledged frame as the host "
                            "received it"),
)
#: A ``RESULTS`` frame leaves with fewer than ``results_limit`` bytes once no data-out
#: byte has come for this many cycles.
RESULTS_FLUSH_CYCLES = 64

#: Width of every counter of the link's status record; a counter stops at its largest
#: value rather than wrap, so a reading never hides errors.  The counters count from the
#: board's reset (a ``RESET`` frame keeps them): a host takes differences.
COUNTER_WIDTH = 16


def count_up(m, counter):
    """Add one to the link counter ``counter`` in ``m``'s ``sync`` domain (under the
    conditions open there), stopping at its largest value.  The increment's carry out
    says the counter is at its top, so the test costs no logic of its own."""
    incremented = counter + 1
    with m.If(~incremented[-1]):
        m.d.sync += counter.eq(incremented[:len(counter)])


#: The link's counters, in the ``STATUS`` record.
LINK_STATUS_FIELDS = (
    Field("frames", COUNTER_WIDTH, doc="host frames taken and executed (RESET included)"),
    Field("duplicates", COUNTER_WIDTH, doc="duplicate frames acknowledged again, not executed"),
    Field("out_of_sequence", COUNTER_WIDTH, doc="intact frames beyond the expected one"),
    Field("rejected", COUNTER_WIDTH, doc="expected frames refused: not whole words or beats, "
                                         "beyond the credit, or a malformed request"),
    Field("crc_errors", COUNTER_WIDTH, doc="frames that failed their CRC"),
    Field("header_errors", COUNTER_WIDTH, doc="sync bytes followed by an impossible header"),
    Field("truncated", COUNTER_WIDTH, doc="frames cut short by a silent line"),
    Field("framing_errors", COUNTER_WIDTH, doc="UART bytes with a low stop bit"),
    Field("overruns", COUNTER_WIDTH, doc="UART bytes lost because the previous one waited"),
    Field("retransmissions", COUNTER_WIDTH, doc="RESULTS frames the host asked for again"),
)
#: The payload of the chip's ``STATUS`` frame, little endian, least significant field
#: first: the chip's status outputs, the link's state, then its counters.
STATUS_FIELDS = (
    Field("error", 8, doc="the chip's sticky ErrorCode"),
    Field("error_opcode", 8, doc="the opcode that raised it"),
    Field("busy", 1, doc="the chip is executing a command or has data in flight"),
    Field("results_waiting", 1, doc="the chip offers a data-out beat the link has not taken"),
    Field("reserved", 6),
    Field("expected", 8, doc="the sequence number of the host frame the chip expects next"),
    Field("executed", 32, doc="commands the chip consumed since reset, modulo 2**32"),
    Field("cycles", 32, doc="the chip's cycles counter (busy or a command waiting)"),
    Field("array_cycles", 32, doc="cycles an activation vector entered the array"),
    Field("results_pending", 16, doc="data-out bytes in the link not yet acknowledged"),
    Field("results_seq", 8, doc="the sequence number of the chip's next or unacknowledged "
                                "RESULTS frame"),
    *ACK_FIELDS[:2],
    *LINK_STATUS_FIELDS,
)
STATUS_BYTES = sum(f.width for f in STATUS_FIELDS) // 8
assert sum(f.width for f in STATUS_FIELDS) % 8 == 0 and STATUS_BYTES <= MAX_PAYLOAD
#: The ``STATUS`` fields taken together at one instant, as the answer starts: those a
#: host judges a run's end by (every command executed, the chip idle, no result byte
#: left in the chip) and the results' position.  Read one by one while the frame
#: leaves, a late ``executed`` beside an early ``busy`` would end a run whose last
#: command was still running.  Every other field is a counter or a credit, whole in
#: itself (taken when its first byte leaves, at or after that instant): a counter only
#: grows, and a credit read late is the room of the buffers then.  So the chip keeps
#: these few in flip-flops rather than the whole record.
STATUS_SNAPSHOT_FIELDS = frozenset({"error", "error_opcode", "busy", "results_waiting",
                                    "reserved", "expected", "executed", "results_pending",
                                    "results_seq"})
assert STATUS_SNAPSHOT_FIELDS <= {f.name for f in STATUS_FIELDS}
assert all(f.width % 8 == 0 for f in STATUS_FIELDS if f.name not in STATUS_SNAPSHOT_FIELDS)


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
    """The link's counters as an Amaranth layout."""
    return _layout(LINK_STATUS_FIELDS)


def status_record_layout():
    """The chip's ``STATUS`` payload as an Amaranth layout."""
    return _layout(STATUS_FIELDS)


def ack_layout():
    """The chip's ``ACK`` payload as an Amaranth layout."""
    return _layout(ACK_FIELDS)


def pack_fields(fields, values):
    """``values`` (a dict by field name; absent fields 0) as the bytes of ``fields``."""
    number = 0
    offset = 0
    for f in fields:
        number |= f.check(values.get(f.name, 0), "frame") << offset
        offset += f.width
    return number.to_bytes(offset // 8, "little")


def unpack_fields(fields, raw):
    """The dict of ``fields`` held in ``raw`` (bytes, at least as long as the fields).

    Raises
    ------
    ValueError
        If ``raw`` is shorter than the fields.
    """
    width = sum(f.width for f in fields)
    if len(raw) * 8 < width:
        raise ValueError(f"raw must hold {width // 8} bytes, not {len(raw)}")
    number = int.from_bytes(bytes(raw), "little")
    values = {}
    for f in fields:
        values[f.name] = number & ((1 << f.width) - 1)
        number >>= f.width
    return values


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
