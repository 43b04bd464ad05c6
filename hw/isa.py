"""The instruction set of the matrix unit, defined once.

The hardware decoder, the golden model, the driver and the documentation all read
the tables in this module: opcodes, the bit layout of every command, the layout of
the per-column requantization record, the status record and the error codes.

A command is one 64-bit word.  Bits ``[3:0]`` hold the opcode; the fields of each
instruction follow from bit 4 upwards, least significant first, in the order of
its ``FIELDS``.  Bits above the last field are reserved and must be zero.
"""

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .beats import row_stride
from .config import COMMAND_WIDTH, PARAM_RECORD_BYTES, STATUS_RECORD_BYTES

__all__ = [
    "Opcode", "ErrorCode", "Rounding", "Instruction", "Nop", "LoadParams", "LoadAct",
    "LoadWeight", "Matmul", "Store", "Fence", "ReadStatus", "ClearError", "INSTRUCTIONS",
    "OPCODE_WIDTH", "decode", "command_layout", "ParamRecord", "PARAM_FIELDS",
    "param_layout", "StatusRecord", "Field", "Rule", "RULE_ERRORS", "fields_layout",
    "status_shape", "addressable_limits", "RecordRule", "PARAM_RULES", "param_record_invalid",
    "RESET_STATE", "RESET_DOC", "SHORT_DATA_DOC",
]

OPCODE_WIDTH = 4


class Opcode(enum.IntEnum):
    """Operation codes, bits ``[3:0]`` of a command."""
    NOP = 0
    LOAD_PARAMS = 1
    LOAD_ACT = 2
    LOAD_WEIGHT = 3
    MATMUL = 4
    STORE = 5
    FENCE = 6
    READ_STATUS = 7
    CLEAR_ERROR = 8
    # Reserved for the next versions; today they raise BAD_OPCODE.
    #  9: LOAD_WEIGHT_SHADOW - load the next weight tile while the current one computes
    # 10: LOOP_MATMUL        - a hardware loop that tiles a whole matmul


class ErrorCode(enum.IntEnum):
    """Sticky error codes, in the order the decoder checks them.

    The first error latches; until ``CLEAR_ERROR`` the chip consumes every further
    command except ``NOP``, ``FENCE``, ``READ_STATUS`` and ``CLEAR_ERROR`` without
    effect (and without consuming data), so a stream that went wrong cannot
    corrupt the buffers.
    """
    NONE = 0
    BAD_OPCODE = 1      #: opcode not defined
    RESERVED_BITS = 2   #: a bit above the instruction's last field is set
    ZERO_SIZE = 3       #: a count or dimension is zero
    OVERSIZE = 4        #: a dimension exceeds the array (k > rows, n > cols, ...)
    ADDR_RANGE = 5      #: a buffer address range or weight slot lies outside the buffer
    BAD_PARAM = 6       #: a requantization record breaks a rule of PARAM_RULES

    @property
    def description(self):
        return {
            ErrorCode.NONE: "no error",
            ErrorCode.BAD_OPCODE: "unknown opcode",
            ErrorCode.RESERVED_BITS: "reserved command bits are set",
            ErrorCode.ZERO_SIZE: "a count or dimension is zero",
            ErrorCode.OVERSIZE: "a dimension exceeds the array",
            ErrorCode.ADDR_RANGE: "a buffer address range is out of bounds",
            ErrorCode.BAD_PARAM: "a requantization record is invalid",
        }[self]


class Rounding(enum.IntEnum):
    """How ``t * multiplier / 2**shift`` becomes an integer.

    The first three round the exact product.  ``FLOAT32`` reproduces the float32
    arithmetic of PyTorch (qnnpack) and onnxruntime, which convert the int32 sum to
    float32, multiply by a float32 scale and round the float result: ``t`` is
    rounded to 24 significant bits, multiplied exactly, the product rounded to 24
    significant bits and then to an integer, every rounding ties to even.  With a
    multiplier of at most 24 significant bits (a float32 mantissa) this equals
    ``rint(float32(t) * float32(multiplier * 2**-shift))`` bit for bit.
    """
    HALF_EVEN = 0   #: exact product, ties to even (numpy.rint of the exact value)
    HALF_AWAY = 1   #: exact product, ties away from zero (TFLite reference)
    HALF_UP = 2     #: exact product, ties towards +infinity
    FLOAT32 = 3     #: float32 arithmetic of PyTorch qnnpack and onnxruntime


@dataclass(frozen=True)
class Field:
    """A bit field: ``name``, ``width`` in bits, ``signed`` two's complement."""
    name: str
    width: int
    signed: bool = False
    doc: str = ""

    @property
    def min(self):
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max(self):
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def check(self, value, owner):
        try:
            # operator.index takes int, bool and numpy integers, but refuses floats and
            # strings instead of truncating them the way int() would.
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{owner} field {self.name!r} must be an integer, "
                            f"not {value!r}") from None
        if not self.min <= value <= self.max:
            raise ValueError(f"{owner} field {self.name!r} must be in {self.min}..{self.max}, "
                             f"not {value!r}")
        return value


#: The error codes an instruction's rules may raise.  ``BAD_OPCODE`` and
#: ``RESERVED_BITS`` are checked for every instruction alike, before its rules;
#: ``BAD_PARAM`` comes from the data a command reads, not from the command.
RULE_ERRORS = tuple(code for code in ErrorCode if code not in (
    ErrorCode.NONE, ErrorCode.BAD_OPCODE, ErrorCode.RESERVED_BITS, ErrorCode.BAD_PARAM))


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One check of a command: it raises ``error`` when ``condition`` holds.

    ``condition(fields, config)`` reads the instruction's fields as attributes of
    ``fields`` and the configuration as an :class:`~hw.config.NpuConfig`.  It is
    evaluated on Python integers (the golden model), on numpy arrays (to find a
    field's valid values) and on the Amaranth values of a ``data.View`` of the command
    word (the controller's decoder), so it must use only operators that mean the same
    on all three: arithmetic, comparisons, ``|`` and ``&``, never ``and``, ``or``,
    ``not`` or ``~``.

    Parameters
    ----------
    error : ErrorCode
        One of :data:`RULE_ERRORS`.  An instruction's rules with the same code combine
        with ``|``; codes are checked in :class:`ErrorCode` order.
    doc : str
        When the rule raises its error, for the reference (``docs/isa.md``).
    condition : callable
        ``condition(fields, config)``, true when the command is malformed.

    Raises
    ------
    TypeError
        If ``error`` is not an :class:`ErrorCode`, ``doc`` not a non-empty string or
        ``condition`` not callable.
    ValueError
        If ``error`` is not one of :data:`RULE_ERRORS`.
    """
    error: ErrorCode
    doc: str
    condition: Callable

    def __post_init__(self):
        if not isinstance(self.error, ErrorCode):
            raise TypeError(f"error must be an ErrorCode, not {self.error!r}")
        if self.error not in RULE_ERRORS:
            names = ", ".join(code.name for code in RULE_ERRORS)
            raise ValueError(f"error must be one of {names}, not {self.error.name}")
        if not isinstance(self.doc, str) or not self.doc.strip():
            raise TypeError(f"doc must be a non-empty string, not {self.doc!r}")
        if not callable(self.condition):
            raise TypeError(f"condition must be callable, not {self.condition!r}")


def _check_rules(rules, owner):
    rules = tuple(rules)
    for rule in rules:
        if not isinstance(rule, Rule):
            raise TypeError(f"{owner} rules must be Rule objects, not {rule!r}")
    errors = [rule.error for rule in rules]
    if errors != sorted(errors):
        raise ValueError(f"{owner} rules must be in ErrorCode order (the order they are "
                         f"checked in), not {', '.join(e.name for e in errors)}")
    return rules


def _pack(field_list, values, owner):
    word, offset = 0, 0
    for f in field_list:
        word |= (f.check(values[f.name], owner) & ((1 << f.width) - 1)) << offset
        offset += f.width
    return word


def _unpack(field_list, word):
    values, offset = {}, 0
    for f in field_list:
        v = (word >> offset) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        values[f.name] = v
        offset += f.width
    return values


def _layout(field_list):
    return data.StructLayout({f.name: signed(f.width) if f.signed else unsigned(f.width)
                              for f in field_list})


class Instruction:
    """Base of all instructions.  Subclasses are frozen dataclasses with ``OPCODE``,
    ``FIELDS`` (a tuple of :class:`Field`, in bit order from bit 4), ``DOC`` and
    ``RULES`` (a tuple of :class:`Rule` in :class:`ErrorCode` order: the checks of the
    command, beyond its opcode and reserved bits)."""

    OPCODE: Opcode
    FIELDS: tuple = ()
    DOC: str = ""
    RULES: tuple = ()

    @classmethod
    def field(cls, name):
        """The :class:`Field` called ``name``."""
        return next(f for f in cls.FIELDS if f.name == name)

    @classmethod
    def checks(cls, fields, config):
        """``(error, violated)`` for each code the rules raise, in the order they are
        checked: ``violated`` is the conditions of the rules with that code, combined with
        ``|``, on ``fields`` and ``config`` (see :class:`Rule`).  The first code whose
        ``violated`` holds is the command's error."""
        combined = {}
        for rule in cls.RULES:
            violated = rule.condition(fields, config)
            combined[rule.error] = (combined[rule.error] | violated if rule.error in combined
                                    else violated)
        return list(combined.items())

    def error(self, config):
        """The :class:`ErrorCode` this instruction's rules raise on ``config``
        (``NONE`` when it passes them all)."""
        return next((error for error, violated in self.checks(self, config) if violated),
                    ErrorCode.NONE)

    def varied(self, name):
        """This instruction's fields with field ``name`` replaced by a numpy array of every
        value the field holds, to evaluate rule conditions on all of them at once."""
        f = self.field(name)
        values = {g.name: getattr(self, g.name) for g in self.FIELDS}
        values[name] = np.arange(f.min, f.max + 1)
        return SimpleNamespace(**values)

    def valid_values(self, name, config):
        """The values field ``name`` may take on ``config``, the other fields as they are
        in this instruction, without breaking a rule (a sorted numpy array)."""
        fields = self.varied(name)
        values = getattr(fields, name)
        broken = np.zeros(values.shape, dtype=bool)
        for _, violated in self.checks(fields, config):
            broken |= violated
        return values[~broken]

    def data_in_bytes(self, config):
        """Bytes this instruction takes from the data-in stream (whole beats)."""
        return 0

    def data_out_bytes(self, config):
        """Bytes this instruction sends to the data-out stream (whole beats)."""
        return 0

    def __post_init__(self):
        for f in self.FIELDS:
            object.__setattr__(self, f.name, f.check(getattr(self, f.name), self.OPCODE.name))

    def encode(self):
        """The 64-bit command word.

        Raises
        ------
        ValueError
            If a field value does not fit its field, naming the field and the value.
        """
        values = {f.name: getattr(self, f.name) for f in self.FIELDS}
        return int(self.OPCODE) | (_pack(self.FIELDS, values, self.OPCODE.name) << OPCODE_WIDTH)

    @classmethod
    def field_offsets(cls):
        offset, result = OPCODE_WIDTH, {}
        for f in cls.FIELDS:
            result[f.name] = (offset, f.width)
            offset += f.width
        return result

    @classmethod
    def used_bits(cls):
        return OPCODE_WIDTH + sum(f.width for f in cls.FIELDS)

    def __str__(self):
        args = " ".join(f"{f.name}={getattr(self, f.name)}" for f in self.FIELDS)
        return f"{self.OPCODE.name:<12}{args}".rstrip()


def _instruction(opcode, doc, *field_list, rules=()):
    def wrap(cls):
        cls.OPCODE = opcode
        cls.FIELDS = tuple(field_list)
        cls.DOC = doc
        cls.RULES = _check_rules(rules, opcode.name)
        cls.__annotations__ = {f.name: int for f in field_list}
        for f in field_list:
            setattr(cls, f.name, 0)
        cls = dataclass(frozen=True, kw_only=True)(cls)
        assert cls.used_bits() <= COMMAND_WIDTH, cls
        return cls
    return wrap


@_instruction(Opcode.NOP, "Do nothing.")
class Nop(Instruction):
    pass


@_instruction(
    Opcode.LOAD_PARAMS,
    "Read `count` requantization records (16 bytes each, one per output column, "
    "starting at column 0) from the data stream into parameter set `param_set`.  Two "
    "sets let one tile's store requantize while the next tile's parameters load.",
    Field("count", 16, doc="columns to load, 1..cols"),
    Field("param_set", 1, doc="which of the two parameter sets to write"),
    rules=(
        Rule(error=ErrorCode.ZERO_SIZE, doc="`count` is 0",
             condition=lambda f, c: f.count == 0),
        Rule(error=ErrorCode.OVERSIZE, doc="`count` > `cols`",
             condition=lambda f, c: f.count > c.cols),
    ))
class LoadParams(Instruction):
    def data_in_bytes(self, config):
        return self.count * row_stride(config, PARAM_RECORD_BYTES)


@_instruction(
    Opcode.LOAD_ACT,
    "Read `count` activation vectors of `length` bytes from the data stream into the "
    "activation buffer at `addr`.., widening uint8 (or int8 when `signed`) to 9 bits; "
    "lanes from `length` up to `rows` are zero.",
    Field("addr", 16, doc="first activation buffer vector"),
    Field("count", 16, doc="vectors (M), 1..act_depth - addr"),
    Field("length", 16, doc="bytes per vector (K), 1..rows"),
    Field("signed", 1, doc="1: int8 activations, 0: uint8"),
    rules=(
        Rule(error=ErrorCode.ZERO_SIZE, doc="`count` is 0",
             condition=lambda f, c: f.count == 0),
        Rule(error=ErrorCode.ZERO_SIZE, doc="`length` is 0",
             condition=lambda f, c: f.length == 0),
        Rule(error=ErrorCode.OVERSIZE, doc="`length` > `rows`",
             condition=lambda f, c: f.length > c.rows),
        Rule(error=ErrorCode.ADDR_RANGE, doc="`addr + count` > `act_depth`",
             condition=lambda f, c: f.addr + f.count > c.act_depth),
    ))
class LoadAct(Instruction):
    def data_in_bytes(self, config):
        return self.count * row_stride(config, self.length)


@_instruction(
    Opcode.LOAD_WEIGHT,
    "Read a `k` x `n` weight tile (row r holds the weights that input feature r "
    "contributes to columns 0..n-1) from the data stream into weight slot `slot`, "
    "subtracting each column's weight zero point (from parameter set `param_set`); the "
    "rest of the tile is zero.",
    Field("slot", 8, doc="weight buffer tile, 0..weight_tiles-1"),
    Field("k", 16, doc="tile rows, 1..rows"),
    Field("n", 16, doc="tile columns, 1..cols"),
    Field("signed", 1, doc="1: int8 weights, 0: uint8"),
    Field("param_set", 1, doc="the parameter set whose weight zero points apply"),
    rules=(
        Rule(error=ErrorCode.ZERO_SIZE, doc="`k` is 0", condition=lambda f, c: f.k == 0),
        Rule(error=ErrorCode.ZERO_SIZE, doc="`n` is 0", condition=lambda f, c: f.n == 0),
        Rule(error=ErrorCode.OVERSIZE, doc="`k` > `rows`",
             condition=lambda f, c: f.k > c.rows),
        Rule(error=ErrorCode.OVERSIZE, doc="`n` > `cols`",
             condition=lambda f, c: f.n > c.cols),
        Rule(error=ErrorCode.ADDR_RANGE, doc="`slot` ≥ `weight_tiles`",
             condition=lambda f, c: f.slot >= c.weight_tiles),
    ))
class LoadWeight(Instruction):
    def data_in_bytes(self, config):
        return self.k * row_stride(config, self.n)


@_instruction(
    Opcode.MATMUL,
    "Stream `count` activation vectors from `act_addr` through the array holding weight "
    "slot `slot`; write (or add, when `accumulate`) the int32 results to the "
    "accumulator at `acc_addr`..",
    Field("act_addr", 16, doc="first activation vector"),
    Field("count", 16, doc="vectors (M), 1.."),
    Field("slot", 8, doc="weight tile"),
    Field("acc_addr", 16, doc="first accumulator row"),
    Field("accumulate", 1, doc="1: add to the accumulator, 0: overwrite it"),
    rules=(
        Rule(error=ErrorCode.ZERO_SIZE, doc="`count` is 0",
             condition=lambda f, c: f.count == 0),
        Rule(error=ErrorCode.ADDR_RANGE, doc="`act_addr + count` > `act_depth`",
             condition=lambda f, c: f.act_addr + f.count > c.act_depth),
        Rule(error=ErrorCode.ADDR_RANGE, doc="`acc_addr + count` > `acc_depth`",
             condition=lambda f, c: f.acc_addr + f.count > c.acc_depth),
        Rule(error=ErrorCode.ADDR_RANGE, doc="`slot` ≥ `weight_tiles`",
             condition=lambda f, c: f.slot >= c.weight_tiles),
    ))
class Matmul(Instruction):
    pass


@_instruction(
    Opcode.STORE,
    "Send `count` accumulator rows from `acc_addr`, columns 0..n-1, to the data-out "
    "stream: requantized with parameter set `param_set` to one byte per value, or int32 "
    "little-endian when `raw`. Each row is padded to whole beats with zero bytes.",
    Field("acc_addr", 16, doc="first accumulator row"),
    Field("count", 16, doc="rows, 1..acc_depth - acc_addr"),
    Field("n", 16, doc="columns, 1..cols"),
    Field("raw", 1, doc="1: raw int32 accumulator, 0: requantized bytes"),
    Field("param_set", 1, doc="the parameter set that requantizes"),
    rules=(
        Rule(error=ErrorCode.ZERO_SIZE, doc="`count` is 0",
             condition=lambda f, c: f.count == 0),
        Rule(error=ErrorCode.ZERO_SIZE, doc="`n` is 0", condition=lambda f, c: f.n == 0),
        Rule(error=ErrorCode.OVERSIZE, doc="`n` > `cols`",
             condition=lambda f, c: f.n > c.cols),
        Rule(error=ErrorCode.ADDR_RANGE, doc="`acc_addr + count` > `acc_depth`",
             condition=lambda f, c: f.acc_addr + f.count > c.acc_depth),
    ))
class Store(Instruction):
    def data_out_bytes(self, config):
        return self.count * row_stride(config, self.n * (4 if self.raw else 1))


@_instruction(Opcode.FENCE, "Wait until every earlier command has finished, output included.")
class Fence(Instruction):
    pass


@_instruction(Opcode.READ_STATUS,
              "Send the 8-byte status record (error code, failing opcode, commands "
              "consumed) to the data-out stream.")
class ReadStatus(Instruction):
    def data_out_bytes(self, config):
        return row_stride(config, STATUS_RECORD_BYTES)


@_instruction(Opcode.CLEAR_ERROR, "Clear the sticky error code; the chip executes commands again.")
class ClearError(Instruction):
    pass


#: Every defined instruction class, by opcode.
INSTRUCTIONS = {cls.OPCODE: cls for cls in
                (Nop, LoadParams, LoadAct, LoadWeight, Matmul, Store, Fence, ReadStatus,
                 ClearError)}

#: Commands that still execute while an error is latched.
ALWAYS_EXECUTED = frozenset({Opcode.NOP, Opcode.FENCE, Opcode.READ_STATUS, Opcode.CLEAR_ERROR})


def decode(word):
    """Decode a 64-bit command word into an :class:`Instruction`.

    Raises
    ------
    ValueError
        If the opcode is not defined or reserved bits are set.
    """
    word = int(word)
    if not 0 <= word < (1 << COMMAND_WIDTH):
        raise ValueError(f"command word must be in 0..2**64-1, not {word!r}")
    opcode = word & ((1 << OPCODE_WIDTH) - 1)
    if opcode not in INSTRUCTIONS:
        raise ValueError(f"command word {word:#018x} has undefined opcode {opcode}")
    cls = INSTRUCTIONS[opcode]
    if word >> cls.used_bits():
        raise ValueError(f"command word {word:#018x} ({cls.OPCODE.name}) has reserved bits set")
    return cls(**_unpack(cls.FIELDS, word >> OPCODE_WIDTH))


def command_layout(cls):
    """Amaranth layout of one instruction's command word, for the hardware decoder."""
    return data.StructLayout({"opcode": OPCODE_WIDTH, **fields_layout(cls).members,
                              "reserved": COMMAND_WIDTH - cls.used_bits()})


def fields_layout(cls):
    """Amaranth layout of one instruction's fields alone, as the units take them."""
    return _layout(cls.FIELDS)


def addressable_limits():
    """The largest ``act_depth``, ``acc_depth`` and ``weight_tiles`` whose every position
    the address and slot fields reach (:class:`~hw.config.NpuConfig` checks these)."""
    def reach(*fields):
        return 1 << min(f.width for f in fields)
    return {"act_depth": reach(LoadAct.field("addr"), Matmul.field("act_addr")),
            "acc_depth": reach(Matmul.field("acc_addr"), Store.field("acc_addr")),
            "weight_tiles": reach(LoadWeight.field("slot"), Matmul.field("slot"))}


# -- per-column requantization record ---------------------------------------------------

#: The 16-byte record that ``LOAD_PARAMS`` reads per column, least significant first.
PARAM_FIELDS = (
    Field("bias", 32, signed=True, doc="folded int32 bias B_j"),
    Field("multiplier", 31, doc="M0_j, so that M_j = M0_j * 2**-shift_j"),
    Field("reserved0", 1),
    Field("shift", 6, doc="shift_j, 1..63"),
    Field("rounding", 2, doc="a Rounding value (0 half-even, 1 half-away, 2 half-up, 3 float32)"),
    Field("weight_zero", 9, signed=True, doc="weight zero point, subtracted as weights load"),
    Field("output_zero", 9, signed=True, doc="output zero point z_y"),
    Field("low", 9, signed=True, doc="lower clamp bound"),
    Field("high", 9, signed=True, doc="upper clamp bound"),
    Field("reserved1", 20),
)
assert sum(f.width for f in PARAM_FIELDS) == 8 * PARAM_RECORD_BYTES


@dataclass(frozen=True, kw_only=True)
class ParamRecord:
    """Requantization parameters of one output column.

    ``y = clamp(round((sat32(acc + bias) * multiplier) / 2**shift) + output_zero,
    low, high)``, with ``clamp(v, lo, hi) = min(max(v, lo), hi)``.
    """
    bias: int = 0
    multiplier: int = 1 << 30
    shift: int = 30
    rounding: int = Rounding.HALF_EVEN
    weight_zero: int = 0
    output_zero: int = 0
    low: int = -128
    high: int = 127

    def __post_init__(self):
        for f in PARAM_FIELDS:
            if not f.name.startswith("reserved"):
                object.__setattr__(self, f.name, f.check(getattr(self, f.name), "param record"))

    @property
    def valid(self):
        """Whether the chip accepts this record (else it raises ``BAD_PARAM``): it breaks
        none of :data:`PARAM_RULES` (its reserved bits are zero)."""
        values = {f.name: getattr(self, f.name, 0) for f in PARAM_FIELDS}
        return not param_record_invalid(SimpleNamespace(**values))

    def encode(self):
        """The record as 16 little-endian bytes."""
        values = {f.name: getattr(self, f.name, 0) for f in PARAM_FIELDS}
        return _pack(PARAM_FIELDS, values, "param record").to_bytes(PARAM_RECORD_BYTES, "little")

    @classmethod
    def decode(cls, raw):
        values = _unpack(PARAM_FIELDS, int.from_bytes(bytes(raw), "little"))
        return cls(**{k: v for k, v in values.items() if not k.startswith("reserved")})


def param_layout():
    """Amaranth layout of a requantization record."""
    return _layout(PARAM_FIELDS)


@dataclass(frozen=True, kw_only=True)
class RecordRule:
    """One check of a requantization record: the record raises ``BAD_PARAM`` when
    ``condition(record)`` holds.

    ``condition`` reads the record's fields (:data:`PARAM_FIELDS`, reserved ones included)
    as attributes of ``record``.  Like :class:`Rule`'s, it is evaluated on Python integers,
    on numpy arrays (the golden model checks many records at once) and on the Amaranth
    values of a ``data.View`` (the load unit), so it uses only arithmetic, comparisons,
    ``|`` and ``&``.

    Raises
    ------
    TypeError
        If ``doc`` is not a non-empty string or ``condition`` not callable.
    """
    doc: str
    condition: Callable

    def __post_init__(self):
        if not isinstance(self.doc, str) or not self.doc.strip():
            raise TypeError(f"doc must be a non-empty string, not {self.doc!r}")
        if not callable(self.condition):
            raise TypeError(f"condition must be callable, not {self.condition!r}")


#: The checks of every record ``LOAD_PARAMS`` reads; a record that breaks one raises
#: ``BAD_PARAM`` and is not written (nor are the records after it).
PARAM_RULES = (
    RecordRule(doc="`shift` is 0", condition=lambda r: r.shift == 0),
    RecordRule(doc="a bit of `reserved0` or `reserved1` is set",
               condition=lambda r: (r.reserved0 != 0) | (r.reserved1 != 0)),
)


def param_record_invalid(record):
    """Whether ``record`` breaks one of :data:`PARAM_RULES` (the conditions combined with
    ``|``, on ints, numpy arrays or Amaranth values alike)."""
    invalid = False
    for rule in PARAM_RULES:
        invalid = invalid | rule.condition(record)
    return invalid


# -- status record ----------------------------------------------------------------------

STATUS_FIELDS = (
    Field("error", 8, doc="sticky ErrorCode"),
    Field("error_opcode", 8, doc="opcode of the command that raised it"),
    Field("reserved", 16),
    Field("commands", 32, doc="commands consumed before this READ_STATUS, modulo 2**32"),
)
assert sum(f.width for f in STATUS_FIELDS) == 8 * STATUS_RECORD_BYTES


@dataclass(frozen=True, kw_only=True)
class StatusRecord:
    """What ``READ_STATUS`` sends: the sticky error and a command count."""
    error: int = 0
    error_opcode: int = 0
    commands: int = 0

    @property
    def error_code(self):
        return ErrorCode(self.error) if self.error in tuple(ErrorCode) else self.error

    def encode(self):
        values = {"error": self.error, "error_opcode": self.error_opcode, "reserved": 0,
                  "commands": self.commands}
        return _pack(STATUS_FIELDS, values, "status record").to_bytes(STATUS_RECORD_BYTES,
                                                                       "little")

    @classmethod
    def decode(cls, raw):
        values = _unpack(STATUS_FIELDS, int.from_bytes(bytes(raw)[:STATUS_RECORD_BYTES], "little"))
        del values["reserved"]
        return cls(**values)


def status_layout():
    """Amaranth layout of the status record."""
    return _layout(STATUS_FIELDS)


# -- reset ------------------------------------------------------------------------------

RESET_DOC = """\
The chip's `rst` input is a synchronous reset: hold it high for at least one rising edge
and the chip takes commands from the first edge after it falls.  It costs no area
beyond the flip-flops' own reset: every register returns to its initial value and the
memories keep what they hold.  A host recovers a chip with it whatever state the chip is
in: waiting for data that will not come (a data-in stream that ended in the middle of a
command), stuck behind a host that stopped, or with an error latched.  (The simulator
sessions and the driver's `Device.reset()` drive it; on a board the serial link's
`RESET` frame does.)
At power-on the chip is in the same state with every buffer zero (the memories'
initial contents).

The edge that raises `rst` may still complete a buffer write that was under way (a load's
vector, a matmul's accumulator row); everything written before it stays.  A host that
reset a chip in the middle of a command therefore treats what that command wrote as
unknown and writes it again."""

SHORT_DATA_DOC = """\
The chip cannot see the end of the data-in stream: a command whose data does not all
arrive waits for the rest.  Until then every vector (or record) that arrived whole is
written as usual, and a record that arrived whole and breaks a rule has raised
`BAD_PARAM`; the beats of an incomplete vector wait in the chip.  Commands after it
that do not wait for the load unit (`NOP`, and while an error is latched every skipped
command) are still consumed.  The rest of the data or a reset ends the wait."""

#: What a reset does to each part of the chip's state: ``(state, after reset)``.
RESET_STATE = (
    ("Error code and failing opcode", "cleared: `NONE`, 0"),
    ("Status counters (`commands`; the chip's `cycles` and `array_cycles`)", "zero"),
    ("Parameter sets 0 and 1", "every column back to the default record, "
     + ", ".join(f"`{name}` {value}" for name, value in vars(ParamRecord()).items())),
    ("Commands in flight", "dropped: the fetched command, a load waiting for data, "
     "vectors in the array, rows being stored and beats not yet sent"),
    ("Data-in beats taken but not yet used", "dropped"),
    ("Weight tiles held in the array's banks", "forgotten: the next `MATMUL` preloads "
     "its tile from the weight buffer"),
    ("Activation buffer, weight buffer, accumulator", "kept"),
)


def status_shape(name):
    """The shape of status record field ``name``: the width of the registers it reports."""
    return status_layout().members[name]
