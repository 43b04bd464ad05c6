"""A chip on a board, over its serial host link (pyserial).

The backend speaks the link's protocol of :mod:`hw.link_protocol`: it numbers its
``COMMANDS`` and ``DATA`` frames, keeps every one until it is acknowledged, sends no more
than the chip's credit allows, sends again (from the first unacknowledged frame) on a
``nak`` or when no acknowledgement came in time, acknowledges the chip's ``RESULTS``
frames in order, and polls ``STATUS`` until the chip has executed every command and every
result byte is here.  Every timeout is here; the chip has none.

``port`` is a serial device (``/dev/ttyUSB0``, ``COM3``) or any pyserial URL, such as
``socket://127.0.0.1:5000`` for the simulated board (:mod:`sim.serial_harness`).

On a noisy line the frames shrink: every retransmission halves the payload of the frames
sent next (and the ``results_limit`` asked of the chip), down to :data:`MIN_PAYLOAD`;
32 frames acknowledged in a row double it again, up to ``MAX_PAYLOAD``.
"""

import collections
import numbers
import time

from hw.config import COMMAND_WIDTH
from hw.isa import StatusRecord
from hw.link_protocol import (
    ACK_FIELDS,
    HOST_ACK_FIELDS,
    MAX_PAYLOAD,
    SEQUENCE_MODULUS,
    STATUS_FIELDS,
    FrameDecoder,
    FrameType,
    encode_frame,
    pack_fields,
    unpack_fields,
)
from sim.host_loop import RunTimeout, counter_difference
from sim.run_result import RunResult

from .base import Backend, BackendUnavailable

__all__ = ["SerialBackend", "LinkError", "MIN_PAYLOAD", "LINK_COUNTERS"]

#: The smallest frame payload the backend shrinks to.
MIN_PAYLOAD = 32
#: Frames sent and not yet acknowledged, at most.  A lost frame costs every frame sent
#: after it (the chip takes frames in order only), so the window halves at each
#: retransmission and grows by one frame per window of frames acknowledged in a row.
WINDOW = 16
#: Seconds a read waits for a first byte when the host has nothing else to do.
READ_WAIT = 0.002
_COMMAND_BYTES = COMMAND_WIDTH // 8
_GROW_AFTER = 32
#: The chip's counters of the status record (:data:`hw.link_protocol.LINK_STATUS_FIELDS`).
LINK_COUNTERS = ("frames", "duplicates", "out_of_sequence", "rejected", "crc_errors",
                 "header_errors", "truncated", "framing_errors", "overruns",
                 "retransmissions")


class LinkError(ConnectionError):
    """The serial link failed: no answer within the timeout, or the chip's link broke
    its protocol.  The message says what was sent, what came back and since when."""


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise TypeError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


class _Sent:
    __slots__ = ("seq", "type", "payload", "sent", "sends")

    def __init__(self, seq, type, payload):
        self.seq, self.type, self.payload = seq, type, payload
        self.sent, self.sends = 0.0, 0


class SerialBackend(Backend):
    """The chip on a board, reached over a serial port.

    Options
    -------
    port : str
        The serial device or a pyserial URL.
    baudrate : int
        Of the line (3,000,000: both boards' UARTs; a ``socket://`` URL ignores it).
    timeout : float
        Seconds without any answer from the chip, while one is due, before a
        :class:`LinkError` (a pulled cable, a board without the link's bitstream).
    run_timeout : float
        Seconds in which the chip makes no progress (every frame acknowledged, no
        command executed, no data taken, no result sent) before a
        :class:`~sim.host_loop.RunTimeout`: the chip waits for data that will not come.
    max_payload : int
        Largest frame payload, from ``MIN_PAYLOAD`` to ``MAX_PAYLOAD``.

    Attributes
    ----------
    link_stats : dict
        Since the backend opened: frames and bytes each way, payload bytes, host
        retransmissions, duplicate results, and the chip's counters' growth.
    """

    name = "serial"

    def __init__(self, *, config=None, port=None, baudrate=3_000_000, timeout=2.0,
                 run_timeout=10.0, max_payload=MAX_PAYLOAD):
        super().__init__(config=config)
        if port is None:
            raise TypeError("backend 'serial' needs port= (a device such as /dev/ttyUSB0, "
                            "or a pyserial URL such as socket://127.0.0.1:5000)")
        if not isinstance(port, str) or not port:
            raise TypeError(f"port must be a serial device or a pyserial URL, not {port!r}")
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise TypeError(f"baudrate must be a positive integer, not {baudrate!r}")
        if isinstance(max_payload, bool) or not isinstance(max_payload, int):
            raise TypeError(f"max_payload must be an integer, not {max_payload!r}")
        if not MIN_PAYLOAD <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in {MIN_PAYLOAD}..{MAX_PAYLOAD}, "
                             f"not {max_payload!r}")
        self.port = port
        self.baudrate = baudrate
        self.timeout = _positive("timeout", timeout)
        self.run_timeout = _positive("run_timeout", run_timeout)
        self.max_payload = max_payload
        self._payload = max_payload
        self._streak = 0
        self._window = WINDOW
        self._window_acks = 0
        serial = _serial_module()
        try:
            self._serial = serial.serial_for_url(port, baudrate=baudrate, timeout=READ_WAIT,
                                                 write_timeout=self.timeout)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(f"cannot open serial port {port!r}: {exc}") from exc
        self._decoder = FrameDecoder()
        self._srtt = self._rttvar = None
        self._status = None         # (reply time, values) of the newest STATUS answer
        self._request = None        # (seq, time) of the STATUS request awaiting its answer
        self._request_seq = 0
        self._last_heard = time.monotonic()
        self._results = bytearray()
        self._last_results = time.monotonic()
        self.link_stats = collections.Counter()
        self._baseline = None
        try:
            self._start_exchange()
            self._baseline = {name: self._status[1][name] for name in LINK_COUNTERS}
        except BaseException:
            self._serial.close()
            raise

    @classmethod
    def check_available(cls):
        _serial_module()

    # -- the line ------------------------------------------------------------------

    def _write(self, type, seq, payload=b""):
        raw = encode_frame(type, seq, payload)
        try:
            self._serial.write(raw)
        except Exception as exc:    # pyserial's SerialTimeoutException, OSError
            raise LinkError(f"{self.port}: writing a {type.name} frame failed: {exc}") from exc
        self.link_stats["frames_sent"] += 1
        self.link_stats["bytes_sent"] += len(raw)
        if type in (FrameType.COMMANDS, FrameType.DATA):
            self.link_stats["payload_sent"] += len(payload)
            self.link_stats[f"{type.name.lower()}_bytes"] += len(payload)

    def _read(self, wait):
        """Take what the line has (waiting up to ``wait`` seconds, at most
        :data:`READ_WAIT`, for a first byte) and act on every frame in it."""
        try:
            waiting = self._serial.in_waiting
            if not waiting and wait > 0:
                # The port's read timeout stays READ_WAIT: setting it reconfigures a
                # real port (a tcsetattr) every time.
                raw = self._serial.read(1)
                waiting = self._serial.in_waiting
                raw += self._serial.read(waiting) if waiting else b""
            else:
                raw = self._serial.read(waiting) if waiting else b""
        except Exception as exc:    # pyserial's SerialException, OSError
            raise LinkError(f"{self.port}: reading failed: {exc}") from exc
        if not raw:
            return
        self.link_stats["bytes_received"] += len(raw)
        for frame in self._decoder.feed(raw):
            self._last_heard = time.monotonic()
            self.link_stats["frames_received"] += 1
            self._on_frame(frame)

    def _on_frame(self, frame):
        if frame.type == FrameType.ACK and len(frame.payload) == _ACK_BYTES:
            self._on_ack(frame.seq, unpack_fields(ACK_FIELDS, frame.payload))
        elif frame.type == FrameType.RESULTS:
            if frame.seq == self._results_seq:
                self._results += frame.payload
                self.link_stats["payload_received"] += len(frame.payload)
                self._last_results = time.monotonic()
                self._last_length = len(frame.payload)
                self._write(FrameType.ACK, frame.seq, self._host_ack())
                self._results_seq = (self._results_seq + 1) % SEQUENCE_MODULUS
            else:
                self.link_stats["duplicate_results"] += 1
        elif frame.type == FrameType.STATUS and len(frame.payload) >= _STATUS_BYTES:
            if self._request is not None and frame.seq == self._request[0]:
                self._status = (time.monotonic(), unpack_fields(STATUS_FIELDS, frame.payload))
                self._request = None
                if self._sync is not None and frame.seq == self._sync:
                    self._resync(self._status[1])
                self._credit_from(self._status[1], self._acked)
        else:
            self.link_stats["unexpected_frames"] += 1

    def _host_ack(self):
        return pack_fields(HOST_ACK_FIELDS, {"results_limit": self._payload,
                                             "length": self._last_length})

    # -- host frames -----------------------------------------------------------------

    def _credit_from(self, values, acked_seq):
        """Credit beyond ``acked_seq`` less the payloads of frames sent after it."""
        commands, data = values["commands_credit"], values["data_credit"]
        for sent in self._unacked:
            if sent.type == FrameType.COMMANDS:
                commands -= len(sent.payload)
            elif sent.type == FrameType.DATA:
                data -= len(sent.payload)
        self._credit = {FrameType.COMMANDS: commands, FrameType.DATA: data,
                        FrameType.FLUSH: 0}

    def _on_ack(self, seq, values):
        now = time.monotonic()
        position = next((i for i, sent in enumerate(self._unacked) if sent.seq == seq), None)
        if position is not None:
            self._in_flight = max(0, self._in_flight - position - 1)
            for _ in range(position + 1):
                sent = self._unacked.popleft()
                if sent.sends == 1:
                    sample = now - sent.sent
                    if self._srtt is None:
                        self._srtt, self._rttvar = sample, sample / 2
                    else:
                        self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - sample)
                        self._srtt = 0.875 * self._srtt + 0.125 * sample
                    self._streak += 1
                    self._window_acks += 1
                    if self._window_acks >= self._window and self._window < WINDOW:
                        self._window += 1
                        self._window_acks = 0
                    if self._streak >= _GROW_AFTER and self._payload < self.max_payload:
                        self._payload = min(self.max_payload, 2 * self._payload)
                        self._streak = 0
            self._acked = seq
            self._progress = now
        elif seq != self._acked:
            return  # an old acknowledgement
        self._credit_from(values, seq)
        if values["nak"] and self._unacked and self._sync is None:
            base = self._unacked[0]
            if now - base.sent > self._rto() / 2:
                self._resend("nak")

    def _rto(self):
        """The retransmission timeout: ``srtt + 4 rttvar`` (RFC 6298), 20 ms to 2 s."""
        if self._srtt is None:
            return 0.5
        return min(2.0, max(0.02, self._srtt + 4 * self._rttvar))

    def _resend(self, why):
        """Go back N: every unacknowledged frame is to be sent again (as the window
        allows, by :meth:`_send_again`); the window and the frames shrink."""
        self.link_stats[f"retransmissions_{why}"] += 1
        self._streak = 0
        self._payload = max(MIN_PAYLOAD, self._payload // 2)
        self._window = max(1, self._window // 2)
        self._window_acks = 0
        self._in_flight = 0
        self._send_again()

    def _timed_out(self):
        """No acknowledgement in time: stop sending and ask where the chip is.

        The answer to a ``STATUS`` request sent after the last frame says exactly which
        frames the chip took (``expected``); the others never will be taken, so they are
        cut again to the shrunk frame size, numbered from ``expected`` and sent again
        (:meth:`_resync`).  (After a ``nak`` they are sent again as they are: copies of
        them may still be on the line.)
        """
        self.link_stats["retransmissions_timeout"] += 1
        self._streak = 0
        self._payload = max(MIN_PAYLOAD, self._payload // 2)
        self._window = max(1, self._window // 2)
        self._window_acks = 0
        self._ask_status()
        self._sync = self._request[0]

    def _resync(self, values):
        """Renumber and cut again the frames the chip has not taken (see
        :meth:`_timed_out`)."""
        expected = values["expected"]
        while self._unacked and 0 < (expected - self._unacked[0].seq) % SEQUENCE_MODULUS \
                <= SEQUENCE_MODULUS // 2:
            self._unacked.popleft()
        self._acked = (expected - 1) % SEQUENCE_MODULUS
        self._progress = time.monotonic()
        frames = collections.deque()
        seq = expected
        for old in self._unacked:
            size = self._chunk(old.type, len(old.payload)) if old.payload else 0
            pieces = [old.payload[i:i + size] for i in range(0, len(old.payload), size)] \
                if old.payload else [b""]
            for piece in pieces:
                sent = _Sent(seq, old.type, piece)
                sent.sends = old.sends      # no RTT sample from a frame sent before
                frames.append(sent)
                seq = (seq + 1) % SEQUENCE_MODULUS
        self._unacked = frames
        self._next_seq = seq
        self._in_flight = 0
        self._sync = None

    def _send_again(self):
        """Send again the unacknowledged frames after the ones in flight, as the window
        allows."""
        now = time.monotonic()
        while self._in_flight < min(len(self._unacked), self._window):
            sent = self._unacked[self._in_flight]
            self._write(sent.type, sent.seq, sent.payload)
            self.link_stats["frames_resent"] += 1
            sent.sent, sent.sends = now, sent.sends + 1
            self._in_flight += 1

    def _send_new(self, type, payload):
        sent = _Sent(self._next_seq, type, payload)
        self._next_seq = (self._next_seq + 1) % SEQUENCE_MODULUS
        self._credit[type] -= len(payload)
        self._unacked.append(sent)
        self._in_flight += 1
        self._write(type, sent.seq, payload)
        sent.sent, sent.sends = time.monotonic(), 1

    def _ask_status(self):
        self._request_seq = (self._request_seq + 1) % SEQUENCE_MODULUS
        self._request = (self._request_seq, time.monotonic())
        self._write(FrameType.STATUS, self._request_seq)

    def _check_heard(self, doing):
        silent = time.monotonic() - self._last_heard
        if silent > self.timeout:
            raise LinkError(
                f"no answer from the chip on {self.port} for {silent:.1f} s (timeout "
                f"{self.timeout:g} s) while {doing}: {len(self._unacked)} frames "
                f"unacknowledged, {len(self._results)} result bytes received; is the board "
                f"connected, powered and loaded with the serial link's bitstream?")

    # -- the exchange ------------------------------------------------------------------

    def _start_exchange(self):
        """RESET frames until the chip's status shows a fresh exchange."""
        try:
            self._serial.reset_input_buffer()
        except Exception:   # noqa: BLE001 - URLs without buffers
            pass
        self._decoder = FrameDecoder()
        self._unacked = collections.deque()
        self._in_flight = 0     # unacknowledged frames sent since the last go-back
        self._sync = None       # the STATUS request after a timeout, awaiting its answer
        self._progress = 0.0    # when an acknowledgement last took frames off
        self._credit = {FrameType.COMMANDS: 0, FrameType.DATA: 0}
        self._acked = 0
        self._next_seq = 1
        self._results_seq = 0
        self._last_length = 0
        self._results = bytearray()
        self._last_heard = time.monotonic()
        self._status = None
        while True:
            self._write(FrameType.RESET, 0)
            self._ask_status()
            deadline = time.monotonic() + self._rto()
            while self._request is not None and time.monotonic() < deadline:
                self._read(min(0.01, max(0.0, deadline - time.monotonic())))
            if self._status is not None:
                values = self._status[1]
                if (values["expected"] == 1 and values["results_seq"] == 0
                        and values["executed"] == 0 and values["results_pending"] == 0):
                    break
                self._status = None
            self._check_heard("resetting the chip")
        self._request = None
        self._results = bytearray()
        self._credit_from(self._status[1], 0)
        self._full_data_credit = self._status[1]["data_credit"]

    def _reset(self):
        self._start_exchange()

    def _frames(self, commands, data_in):
        words = b"".join(int(c).to_bytes(_COMMAND_BYTES, "little") for c in commands)
        return {FrameType.COMMANDS: [bytes(words), 0], FrameType.DATA: [bytes(data_in), 0]}

    def _chunk(self, type, remaining):
        unit = _COMMAND_BYTES if type == FrameType.COMMANDS else self.config.data_bytes
        size = max(unit, self._payload // unit * unit)
        return min(size, remaining)

    def _execute(self, commands, data_in):
        if len(data_in) % self.config.data_bytes:
            raise ValueError(f"data_in must be whole {self.config.data_bytes}-byte beats, "
                             f"not {len(data_in)} bytes")
        commands = list(commands)
        pending = self._frames(commands, data_in)
        start = self._status[1]
        target = (start["executed"] + len(commands)) & 0xFFFFFFFF
        self._results = bytearray()
        self._unused = 0
        progress, progressed = None, time.monotonic()
        asked_at = float("inf")     # when the newest request made after the last frame left
        self._last_heard = time.monotonic()
        done = None
        while done is None:
            # Send what the window and the credits allow: frames to send again first,
            # then new ones, command words before data.
            if self._sync is None:
                self._send_again()
            for type in () if self._sync is not None else (FrameType.COMMANDS, FrameType.DATA):
                raw, offset = pending[type]
                while (offset < len(raw) and len(self._unacked) < self._window
                       and self._in_flight == len(self._unacked)):
                    size = self._chunk(type, len(raw) - offset)
                    if size > self._credit[type]:
                        break
                    self._send_new(type, raw[offset:offset + size])
                    offset += size
                pending[type][1] = offset
            now = time.monotonic()
            # Timed out: nothing acknowledged for an RTO since the oldest frame left.
            if self._sync is not None:
                if now - self._request[1] > self._rto():
                    self._ask_status()
                    self._sync = self._request[0]
            elif self._unacked and now - max(self._unacked[0].sent, self._progress) > self._rto():
                self._timed_out()
            sending = any(offset < len(raw) for raw, offset in pending.values())
            # Every command word sent and acknowledged: the status can say the run is over
            # (data-in not sent yet may be data the commands never take).
            commands_sent = pending[FrameType.COMMANDS][1] == len(pending[FrameType.COMMANDS][0])
            if not self._unacked and (self._request is None
                                      or now - self._request[1] > self._rto()):
                if self._request is not None:
                    self.link_stats["status_requests_lost"] += 1
                # Nothing in flight: ask how far the chip is (for credit, or for the end).
                if (self._status is not None and self._status[1]["results_pending"]
                        and now - self._last_results > self._rto()):
                    # A RESULTS frame or the host's ACK of it was lost: ask for it again,
                    # shorter.
                    self.link_stats["results_asked_again"] += 1
                    self._payload = max(MIN_PAYLOAD, self._payload // 2)
                    self._streak = 0
                    self._write(FrameType.ACK, (self._results_seq - 1) % SEQUENCE_MODULUS,
                                self._host_ack())
                    self._last_results = now
                self._ask_status()
                asked_at = now if commands_sent else float("inf")
            self._read(0.002 if self._unacked or sending else 0.001)
            if self._unacked or self._request is not None:
                self._check_heard("running a program" if sending or self._unacked
                                  else "waiting for the chip to finish")
            if self._status is not None and commands_sent and not self._unacked \
                    and self._status[0] >= asked_at:
                values = self._status[1]
                if (values["executed"] == target and not values["busy"]
                        and not values["results_waiting"] and not values["results_pending"]):
                    raw, offset = pending[FrameType.DATA]
                    if values["data_credit"] == self._full_data_credit and offset == len(raw):
                        done = values
                        break
                    # Data-in the commands left unused, in the link and not sent yet:
                    # dropped, as the simulators drop it.
                    self._unused += self._full_data_credit - values["data_credit"] \
                        + len(raw) - offset
                    pending[FrameType.DATA][1] = len(raw)
                    self._send_new(FrameType.FLUSH, b"")
                    asked_at = float("inf")
                    continue
                mark = (values["executed"], values["data_credit"], values["commands_credit"],
                        values["results_pending"], values["array_cycles"], len(self._results))
                if mark != progress:
                    progress, progressed = mark, time.monotonic()
                elif time.monotonic() - progressed > self.run_timeout:
                    status = StatusRecord(error=values["error"],
                                          error_opcode=values["error_opcode"],
                                          commands=values["executed"])
                    raise RunTimeout(
                        f"the chip made no progress for {self.run_timeout:g} s: "
                        f"{values['executed'] - start['executed']} of {len(commands)} "
                        f"commands executed, {len(self._results)} result bytes received",
                        result=RunResult(data_out=bytes(self._results), status=status))
        status = StatusRecord(error=done["error"], error_opcode=done["error_opcode"],
                              commands=done["executed"])
        array_cycles = counter_difference(done["array_cycles"], start["array_cycles"])
        return RunResult(
            data_out=bytes(self._results), status=status,
            cycles=counter_difference(done["cycles"], start["cycles"]), cycles_measured=True,
            array_cycles=array_cycles,
            array_macs=array_cycles * self.config.rows * self.config.cols,
            data_in_used=len(data_in) - self._unused)

    def chip_counters(self):
        """The chip's link counters' growth since the backend opened (from the newest
        ``STATUS`` answer)."""
        values = self._status[1]
        return {name: values[name] - self._baseline[name] for name in LINK_COUNTERS}

    def summary(self):
        """The link's figures since the backend opened: the host's and the chip's
        counters, and the payload's share of the line's bytes."""
        stats = dict(self.link_stats)
        if self._baseline is not None and self._status is not None:
            stats.update({f"chip_{name}": value for name, value in self.chip_counters().items()})
        line = stats.get("bytes_sent", 0) + stats.get("bytes_received", 0)
        payload = stats.get("payload_sent", 0) + stats.get("payload_received", 0)
        stats["efficiency"] = payload / line if line else None
        return stats

    def close(self):
        serial = getattr(self, "_serial", None)
        if serial is not None:
            serial.close()
            self._serial = None


_ACK_BYTES = sum(f.width for f in ACK_FIELDS) // 8
_STATUS_BYTES = sum(f.width for f in STATUS_FIELDS) // 8


def _serial_module():
    try:
        import serial
    except ImportError as exc:
        raise BackendUnavailable(f"backend 'serial' needs pyserial: pip install pyserial "
                                 f"({exc})") from exc
    return serial
