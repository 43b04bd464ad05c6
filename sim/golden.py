"""Bit-exact NumPy model of the matrix unit at the transaction level.

:class:`GoldenNpu` executes the same command words and data-in bytes as the
hardware and produces the same data-out bytes and the same status, including the
sticky error behaviour.  It keeps its buffers between :meth:`GoldenNpu.run` calls,
as the chip does, and through :meth:`GoldenNpu.reset` (``RESET_STATE`` in
:mod:`hw.isa`).  A data-in stream that ends in the middle of a command leaves the state
the chip is in while it waits for the rest (``SHORT_DATA_DOC`` in :mod:`hw.isa`) and
raises :class:`DataUnderflow`.
"""

from types import SimpleNamespace

import numpy as np

from hw import isa
from hw.beats import pack_rows, row_stride, unpack_rows
from hw.config import ACC_WIDTH, OPERAND_WIDTH, PARAM_RECORD_BYTES, NpuConfig, check_config
from hw.isa import ErrorCode, Opcode
from sim.cycle_model import CycleModel, Outcome
from sim.run_result import RunResult

__all__ = ["GoldenNpu", "RunResult", "DataUnderflow", "requantize", "widen_weights",
           "check_command"]

_INT32_MIN, _INT32_MAX = -(1 << (ACC_WIDTH - 1)), (1 << (ACC_WIDTH - 1)) - 1
#: The status record's command count wraps at its field width.
_COMMAND_COUNT_MASK = (1 << isa.status_shape("commands").width) - 1


class DataUnderflow(RuntimeError):
    """The data-in stream ended in the middle of a command that reads it.

    The chip waits for more data; the model cannot, so it says so, in the state the
    waiting chip is in (``SHORT_DATA_DOC`` in :mod:`hw.isa`): the vectors that arrived
    whole are written, a record that breaks a rule has raised ``BAD_PARAM`` and the
    commands the chip consumes while it waits are counted.  The model then refuses to
    run until :meth:`GoldenNpu.reset`, as the chip takes nothing else.

    Attributes
    ----------
    result : RunResult
        What the run produced up to the wait: the data-out bytes, the status, the data-in
        bytes taken (all of them); no cycle counts.
    """

    def __init__(self, message, *, result=None):
        super().__init__(message)
        self.result = result


def _wrap(values, bits):
    """Two's complement wrap of int64 values to ``bits`` bits."""
    half = 1 << (bits - 1)
    return ((np.asarray(values, dtype=np.int64) + half) & ((1 << bits) - 1)) - half


def widen_weights(raw, signed, weight_zero):
    """Weight bytes to the operands the array holds: ``ext(w) - z_w`` wrapped to
    ``OPERAND_WIDTH`` bits."""
    raw = np.asarray(raw, dtype=np.uint8)
    ext = raw.view(np.int8).astype(np.int64) if signed else raw.astype(np.int64)
    return _wrap(ext - np.asarray(weight_zero, dtype=np.int64), OPERAND_WIDTH)


def _bit_length(values):
    """Bit length of ``|values|`` (int64 arrays, exact for every magnitude below 2**63)."""
    magnitude = np.abs(np.asarray(values, dtype=np.int64)).astype(np.uint64)
    length = np.zeros(magnitude.shape, dtype=np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        wide = magnitude >= (np.uint64(1) << np.uint64(step))
        length += np.where(wide, step, 0)
        magnitude = np.where(wide, magnitude >> np.uint64(step), magnitude)
    return length + (magnitude > 0)


def _round_shift(values, shift, tie_up):
    """``values / 2**shift`` rounded to the nearest integer (``shift >= 0``).

    ``tie_up(floor)`` says, per element, whether an exact tie rounds up from ``floor``.
    """
    values = np.asarray(values, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    floor = values >> shift
    frac = values - (floor << shift)
    half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 1)
    up = (shift > 0) & ((frac > half) | ((frac == half) & tie_up(floor)))
    return floor + up


def _odd(floor):
    return (floor & 1).astype(bool)


def round_significant(values, bits=24):
    """Round int64 ``values`` to ``bits`` significant bits, ties to even (float32: 24)."""
    drop = np.maximum(_bit_length(values) - bits, 0)
    return _round_shift(values, drop, _odd) << drop


def unpack_param_records(block):
    """Fields of many 16-byte :data:`~hw.isa.PARAM_FIELDS` records at once.

    ``block`` is ``[count, 16]`` uint8; returns ``{field name: int64 array [count]}``.
    """
    words = [np.zeros(len(block), dtype=np.uint64), np.zeros(len(block), dtype=np.uint64)]
    for byte in range(PARAM_RECORD_BYTES):
        words[byte // 8] |= block[:, byte].astype(np.uint64) << np.uint64(8 * (byte % 8))
    fields, offset = {}, 0
    for f in isa.PARAM_FIELDS:
        word, bit = words[offset // 64], offset % 64
        assert bit + f.width <= 64, "no record field crosses a 64-bit boundary"
        value = ((word >> np.uint64(bit)) & np.uint64((1 << f.width) - 1)).astype(np.int64)
        if f.signed:
            value = np.where(value >> (f.width - 1), value - (1 << f.width), value)
        fields[f.name] = value
        offset += f.width
    return fields


def requantize(acc, bias, multiplier, shift, rounding, output_zero, low, high):
    """Requantize int32 accumulators per column, exactly as the hardware does.

    Every argument after ``acc`` is per column (broadcast against the last axis).

    ``t = sat32(acc + bias)``, ``p = t * multiplier``, ``r = round(p / 2**shift)`` with the
    column's :class:`~hw.isa.Rounding`, ``y = min(max(r + output_zero, low), high)``.
    In ``FLOAT32`` mode ``t`` and ``p`` are first rounded to 24 significant bits.
    """
    acc = np.asarray(acc, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    rounding = np.asarray(rounding, dtype=np.int64)
    as_float32 = rounding == isa.Rounding.FLOAT32
    t = np.clip(acc + np.asarray(bias, dtype=np.int64), _INT32_MIN, _INT32_MAX)
    t = np.where(as_float32, round_significant(t), t)
    p = t * np.asarray(multiplier, dtype=np.int64)          # |p| < 2**62: exact in int64
    p = np.where(as_float32, round_significant(p), p)
    ties_to_even = (rounding == isa.Rounding.HALF_EVEN) | as_float32
    r = _round_shift(p, shift, lambda floor: np.where(
        ties_to_even, _odd(floor), (rounding != isa.Rounding.HALF_AWAY) | (p >= 0)))
    y = np.minimum(np.maximum(r + np.asarray(output_zero, dtype=np.int64), low), high)
    return y.astype(np.int64)


def check_command(word, config):
    """The :class:`~hw.isa.ErrorCode` a command word raises on ``config``, and the decoded
    instruction (None when it cannot be decoded).

    The opcode and the reserved bits are checked first, then the rules of the
    instruction (its ``RULES`` in :mod:`hw.isa`, which the controller's decoder is
    built from too).
    """
    opcode = word & ((1 << isa.OPCODE_WIDTH) - 1)
    cls = isa.INSTRUCTIONS.get(opcode)
    if cls is None:
        return ErrorCode.BAD_OPCODE, None
    if word >> cls.used_bits():
        return ErrorCode.RESERVED_BITS, None
    ins = isa.decode(word)
    return ins.error(config), ins


class GoldenNpu:
    """The matrix unit as a NumPy model.

    Parameters
    ----------
    config : NpuConfig
        The configuration to model.
    """

    def __init__(self, config=None):
        if config is None:
            config = NpuConfig()
        check_config(config)
        self.config = config
        # Power-on: the buffers hold zero (the memories' initial contents), then a reset.
        c = config
        self.act = np.zeros((c.act_depth, c.rows), dtype=np.int64)
        self.weights = np.zeros((c.weight_tiles, c.rows, c.cols), dtype=np.int64)
        self.acc = np.zeros((c.acc_depth, c.cols), dtype=np.int64)
        self._check_cache = {}
        self.reset()

    def reset(self):
        """The chip's reset (``RESET_STATE`` in :mod:`hw.isa`): default parameters, no
        error, counters at zero, nothing in flight, the cycle model fresh; the activation
        and weight buffers and the accumulator keep their contents."""
        c = self.config
        default = isa.ParamRecord()
        #: Two parameter sets, each a field -> per-column array mapping.
        self.params = [{f: np.full(c.cols, getattr(default, f), dtype=np.int64)
                        for f in ("bias", "multiplier", "shift", "rounding", "weight_zero",
                                  "output_zero", "low", "high")} for _ in range(2)]
        self.error = ErrorCode.NONE
        self.error_opcode = 0
        self.commands = 0
        self.macs = 0
        self.timeline = CycleModel(self.config)
        #: The message of a DataUnderflow the model still waits in (None: not waiting).
        self.waiting = None
        self._starved = None

    # -- data stream helpers -------------------------------------------------------------

    def _take(self, count, nbytes, what):
        """``count`` vectors of ``nbytes`` bytes, each padded to whole beats; fewer if the
        stream ends first (the vectors that arrived whole, and the model starves)."""
        stride = row_stride(self.config, nbytes)
        needed = count * stride
        left = len(self._data) - self._pos
        if needed > left:
            self._starved = (f"{what} needs {needed} data bytes at offset {self._pos}, "
                             f"the stream has {left}")
            count = left // stride
        block = unpack_rows(self.config, self._data, count, nbytes, offset=self._pos)
        self._pos = min(self._pos + needed, len(self._data))
        return block

    def _emit(self, rows):
        """Send byte rows, each padded to whole beats."""
        self._out.append(pack_rows(self.config, rows))

    def _raise(self, code, opcode):
        if self.error == ErrorCode.NONE:
            self.error, self.error_opcode = ErrorCode(code), int(opcode)

    # -- execution -----------------------------------------------------------------------

    def run(self, commands, data_in=b""):
        """Execute command words against a data-in byte stream.

        Parameters
        ----------
        commands : iterable of int
            64-bit command words.
        data_in : bytes-like
            The data-in stream (whole beats).

        Returns
        -------
        RunResult
            The data-out bytes, the status after the last command, the data-in bytes
            consumed and the cycle model's counts (``cycles_measured`` is False).

        Raises
        ------
        DataUnderflow
            If a command needs more data than ``data_in`` holds (the model is then in the
            state of the chip waiting for it, until :meth:`reset`).
        RuntimeError
            If the model still waits for the data of an earlier run's command.
        """
        if self.waiting is not None:
            raise RuntimeError(f"the model waits for data ({self.waiting}): reset it first")
        self._data = bytes(data_in)
        self._pos = 0
        self._out = []
        self._starved = None
        macs = self.macs
        self.timeline.start_run()
        words = iter(commands)
        for word in words:
            self.step(int(word))
            if self._starved is not None:
                self._consume_while_waiting(words)
                self.waiting = self._starved
                raise DataUnderflow(self._starved, result=RunResult(
                    data_out=b"".join(self._out), status=self.status(),
                    data_in_used=self._pos))
        array_macs = self.macs - macs
        return RunResult(data_out=b"".join(self._out), status=self.status(),
                         cycles=self.timeline.cycles, cycles_measured=False,
                         array_cycles=array_macs // (self.config.rows * self.config.cols),
                         array_macs=array_macs, data_in_used=self._pos)

    def _consume_while_waiting(self, words):
        """Count the commands the chip consumes while a load waits for data: well-formed
        ones that wait for nothing (``NOP``; with an error latched, every skipped one)."""
        for word in words:
            code, _ = self._checked(int(word))
            opcode = int(word) & ((1 << isa.OPCODE_WIDTH) - 1)
            skipped = self.error != ErrorCode.NONE and opcode not in isa.ALWAYS_EXECUTED
            if code != ErrorCode.NONE or not (opcode == Opcode.NOP or skipped):
                return
            self.commands += 1

    def status(self):
        return isa.StatusRecord(error=int(self.error), error_opcode=self.error_opcode,
                                commands=self.commands & _COMMAND_COUNT_MASK)

    def _checked(self, word):
        """``check_command`` of ``word``, remembered: tiled programs repeat their words."""
        try:
            return self._check_cache[word]
        except KeyError:
            result = self._check_cache[word] = check_command(word, self.config)
            return result

    def step(self, word):
        """Execute one command word (``run`` sets up the streams)."""
        code, ins = self._checked(word)
        opcode = word & ((1 << isa.OPCODE_WIDTH) - 1)
        self._bad_record = None
        if code != ErrorCode.NONE:
            self._raise(code, opcode)
            outcome = Outcome.MALFORMED
        elif self.error == ErrorCode.NONE or opcode in isa.ALWAYS_EXECUTED:
            getattr(self, "_exec_" + Opcode(opcode).name.lower())(ins)
            outcome = Outcome.EXECUTED
        else:
            outcome = Outcome.SKIPPED
        if self._starved is None:
            self.timeline.step(ins, outcome, bad_record=self._bad_record)
        self.commands += 1

    def _exec_nop(self, ins):
        pass

    _exec_fence = _exec_nop

    def _exec_clear_error(self, ins):
        self.error, self.error_opcode = ErrorCode.NONE, 0

    def _exec_read_status(self, ins):
        record = np.frombuffer(self.status().encode(), dtype=np.uint8)
        self._emit(record[None, :])

    def _exec_load_params(self, ins):
        block = self._take(ins.count, PARAM_RECORD_BYTES, "LOAD_PARAMS")
        fields = unpack_param_records(block)
        invalid = np.flatnonzero(np.broadcast_to(
            isa.param_record_invalid(SimpleNamespace(**fields)), len(block)))
        # Records are written only while no error is latched: up to the first invalid one.
        written = 0 if self.error != ErrorCode.NONE else (
            invalid[0] if invalid.size else len(block))
        if invalid.size and self.error == ErrorCode.NONE:
            self._bad_record = int(invalid[0])
        if invalid.size:
            self._raise(ErrorCode.BAD_PARAM, Opcode.LOAD_PARAMS)
        for name, values in self.params[ins.param_set].items():
            values[:written] = fields[name][:written]

    def _exec_load_act(self, ins):
        block = self._take(ins.count, ins.length, "LOAD_ACT")
        values = block.view(np.int8) if ins.signed else block
        rows = slice(ins.addr, ins.addr + len(block))
        self.act[rows] = 0
        self.act[rows, :ins.length] = values

    def _exec_load_weight(self, ins):
        block = self._take(ins.k, ins.n, "LOAD_WEIGHT")
        # Rows k.. are written with zeros once all k rows arrived.
        got = len(block) if self._starved is not None else self.config.rows
        tile = np.zeros((self.config.rows, self.config.cols), dtype=np.int64)
        zero = self.params[ins.param_set]["weight_zero"][:ins.n]
        tile[:len(block), :ins.n] = widen_weights(block, ins.signed, zero)
        self.weights[ins.slot, :got] = tile[:got]

    def _exec_matmul(self, ins):
        products = self.act[ins.act_addr:ins.act_addr + ins.count] @ self.weights[ins.slot]
        rows = slice(ins.acc_addr, ins.acc_addr + ins.count)
        base = self.acc[rows] if ins.accumulate else 0
        self.acc[rows] = _wrap(base + products, ACC_WIDTH)
        self.macs += ins.count * self.config.rows * self.config.cols

    def _exec_store(self, ins):
        acc = self.acc[ins.acc_addr:ins.acc_addr + ins.count, :ins.n]
        if ins.raw:
            self._emit(acc.astype("<i4").view(np.uint8).reshape(ins.count, 4 * ins.n))
            return
        p = {k: v[:ins.n] for k, v in self.params[ins.param_set].items()}
        y = requantize(acc, p["bias"], p["multiplier"], p["shift"], p["rounding"],
                       p["output_zero"], p["low"], p["high"])
        self._emit((y & 0xFF).astype(np.uint8))
