"""The instruction set: encoding, decoding, field checks and the Amaranth layouts.

The layouts are what the hardware decoder slices; the encoders are what the driver and
the golden model use.  Reading every encoded word back through an Amaranth
``data.Const`` of the layout checks that both agree bit for bit.
"""

import dataclasses
import random
from fractions import Fraction

import numpy as np
import pytest
from amaranth.hdl import Signal, Value
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st

from hw import isa
from hw.config import COMMAND_WIDTH, PARAM_RECORD_BYTES, STATUS_RECORD_BYTES, NpuConfig
from hw.isa import ErrorCode, Field, Opcode, Rounding
from sim.programs import valid_instruction

CLASSES = list(isa.INSTRUCTIONS.values())
CLASS_IDS = [cls.OPCODE.name for cls in CLASSES]
#: (class, field) for every field of every instruction.
INSTRUCTION_FIELDS = [(cls, f) for cls in CLASSES for f in cls.FIELDS]
FIELD_IDS = [f"{cls.OPCODE.name}.{f.name}" for cls, f in INSTRUCTION_FIELDS]
UNDEFINED_OPCODES = sorted(set(range(1 << isa.OPCODE_WIDTH)) - set(isa.INSTRUCTIONS))
PARAM_VALUE_FIELDS = [f for f in isa.PARAM_FIELDS if not f.name.startswith("reserved")]


def field_strategy(field):
    return st.integers(field.min, field.max)


def instructions(cls):
    return st.builds(cls, **{f.name: field_strategy(f) for f in cls.FIELDS})


any_instruction = st.one_of([instructions(cls) for cls in CLASSES])


def out_of_range(field):
    return [field.min - 1, field.max + 1]


# -- opcodes --------------------------------------------------------------------------------

def test_every_opcode_has_one_instruction():
    assert sorted(isa.INSTRUCTIONS) == sorted(Opcode)
    for opcode, cls in isa.INSTRUCTIONS.items():
        assert cls.OPCODE == opcode
        assert 0 <= opcode < 1 << isa.OPCODE_WIDTH
    assert len({cls.DOC for cls in CLASSES}) == len(CLASSES)   # each documented, differently


def test_commands_that_run_while_an_error_is_latched():
    assert isa.ALWAYS_EXECUTED == {Opcode.NOP, Opcode.FENCE, Opcode.READ_STATUS,
                                   Opcode.CLEAR_ERROR}


# -- encode / decode ------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(any_instruction)
def test_encode_decode_round_trip(instruction):
    word = instruction.encode()
    assert 0 <= word < 1 << COMMAND_WIDTH
    assert word & 0xF == instruction.OPCODE
    assert word >> instruction.used_bits() == 0
    assert isa.decode(word) == instruction
    assert isa.decode(word).encode() == word


@settings(max_examples=300, deadline=None)
@given(any_instruction)
def test_encoding_follows_the_documented_bit_order(instruction):
    # Fields from bit 4 upwards, least significant first, in FIELDS order.
    expected, offset = int(instruction.OPCODE), isa.OPCODE_WIDTH
    for f in instruction.FIELDS:
        expected |= (getattr(instruction, f.name) % (1 << f.width)) << offset
        offset += f.width
    assert instruction.encode() == expected


@settings(max_examples=300, deadline=None)
@given(any_instruction)
def test_command_layout_reads_what_encode_writes(instruction):
    view = data.Const(isa.command_layout(type(instruction)), instruction.encode())
    assert view.opcode == instruction.OPCODE
    assert view.reserved == 0
    for f in instruction.FIELDS:
        assert view[f.name] == getattr(instruction, f.name), f.name


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_command_layout_matches_field_offsets(cls):
    layout = isa.command_layout(cls)
    assert layout.size == COMMAND_WIDTH
    members = dict(layout)
    assert list(members) == ["opcode", *(f.name for f in cls.FIELDS), "reserved"]
    assert (members["opcode"].offset, members["opcode"].width) == (0, isa.OPCODE_WIDTH)
    for name, (offset, width) in cls.field_offsets().items():
        assert (members[name].offset, members[name].width) == (offset, width)
    assert members["reserved"].offset == cls.used_bits()
    assert members["reserved"].width == COMMAND_WIDTH - cls.used_bits()


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_default_instruction_is_all_zero_fields(cls):
    assert cls().encode() == cls.OPCODE


@settings(max_examples=100, deadline=None)
@given(any_instruction)
def test_str_names_the_opcode_and_every_field(instruction):
    text = str(instruction)
    assert text.split()[0] == instruction.OPCODE.name
    assert text.split()[1:] == [f"{f.name}={getattr(instruction, f.name)}"
                                for f in instruction.FIELDS]


# -- field checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls, field", INSTRUCTION_FIELDS, ids=FIELD_IDS)
def test_field_overflow_names_field_and_value(cls, field):
    for value in out_of_range(field):
        with pytest.raises(ValueError, match=f"{cls.OPCODE.name} field '{field.name}' must be "
                                             f"in {field.min}[.][.]{field.max}, not {value}$"):
            cls(**{field.name: value})


@pytest.mark.parametrize("cls, field", INSTRUCTION_FIELDS, ids=FIELD_IDS)
def test_field_limits_are_accepted(cls, field):
    for value in (field.min, field.max):
        assert getattr(isa.decode(cls(**{field.name: value}).encode()), field.name) == value


@pytest.mark.parametrize("value", [1.0, 2.5, "3", None, [1]])
def test_field_refuses_non_integers(value):
    with pytest.raises(TypeError, match="LOAD_ACT field 'addr' must be an integer"):
        isa.LoadAct(addr=value)


@pytest.mark.parametrize("value", [np.uint16(5), np.int64(5), True])
def test_field_accepts_integer_like_values(value):
    instruction = isa.LoadAct(addr=value)
    assert type(instruction.addr) is int and instruction.addr == int(value)


def test_instructions_are_frozen():
    instruction = isa.Store(count=1)
    with pytest.raises(AttributeError):
        instruction.count = 2


def test_instructions_take_keywords_only():
    with pytest.raises(TypeError):
        isa.LoadParams(3)


# -- decode rejects -------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(opcode=st.sampled_from(UNDEFINED_OPCODES), upper=st.integers(0, (1 << 60) - 1))
def test_decode_rejects_undefined_opcodes(opcode, upper):
    with pytest.raises(ValueError, match=f"undefined opcode {opcode}$"):
        isa.decode(upper << isa.OPCODE_WIDTH | opcode)


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_decode_rejects_every_reserved_bit(cls):
    for bit in range(cls.used_bits(), COMMAND_WIDTH):
        with pytest.raises(ValueError, match=f"[(]{cls.OPCODE.name}[)] has reserved bits set"):
            isa.decode(cls().encode() | 1 << bit)


@pytest.mark.parametrize("word", [-1, 1 << COMMAND_WIDTH])
def test_decode_rejects_words_outside_64_bits(word):
    with pytest.raises(ValueError, match="command word must be in"):
        isa.decode(word)


# -- data stream sizes ----------------------------------------------------------------------

# rows 4, cols 5 and 3-byte beats: every vector pads to a whole number of 3-byte beats.
SIZES_CONFIG = NpuConfig(rows=4, cols=5, data_bytes=3)


@pytest.mark.parametrize("instruction, data_in, data_out", [
    (isa.LoadParams(count=2), 2 * 18, 0),          # 16-byte record -> 6 beats
    (isa.LoadAct(count=2, length=4), 2 * 6, 0),    # 4 bytes -> 2 beats
    (isa.LoadAct(count=3, length=3), 3 * 3, 0),    # exactly one beat
    (isa.LoadWeight(k=3, n=5), 3 * 6, 0),
    (isa.Store(count=2, n=5, raw=1), 0, 2 * 21),   # 20 bytes -> 7 beats
    (isa.Store(count=2, n=5, raw=0), 0, 2 * 6),
    (isa.ReadStatus(), 0, 9),                      # 8 bytes -> 3 beats
    (isa.Matmul(count=7), 0, 0),
    (isa.Nop(), 0, 0), (isa.Fence(), 0, 0), (isa.ClearError(), 0, 0),
], ids=str)
def test_data_stream_bytes(instruction, data_in, data_out):
    assert instruction.data_in_bytes(SIZES_CONFIG) == data_in
    assert instruction.data_out_bytes(SIZES_CONFIG) == data_out


# -- requantization record ------------------------------------------------------------------

param_records = st.builds(isa.ParamRecord,
                          **{f.name: field_strategy(f) for f in PARAM_VALUE_FIELDS})


@settings(max_examples=300, deadline=None)
@given(param_records)
def test_param_record_round_trip(record):
    raw = record.encode()
    assert len(raw) == PARAM_RECORD_BYTES
    assert isa.ParamRecord.decode(raw) == record
    view = data.Const(isa.param_layout(), int.from_bytes(raw, "little"))
    for f in isa.PARAM_FIELDS:
        assert view[f.name] == getattr(record, f.name, 0), f.name


def test_param_layout_matches_field_table():
    layout = dict(isa.param_layout())
    assert isa.param_layout().size == 8 * PARAM_RECORD_BYTES
    offset = 0
    for f in isa.PARAM_FIELDS:
        assert (layout[f.name].offset, layout[f.name].width) == (offset, f.width)
        assert layout[f.name].shape.signed == f.signed
        offset += f.width


def test_param_record_is_little_endian_with_bias_first():
    raw = isa.ParamRecord(bias=0x01020304, multiplier=0x05060708).encode()
    assert raw[:8] == bytes([4, 3, 2, 1, 8, 7, 6, 5])
    assert isa.ParamRecord(bias=-1).encode()[:4] == b"\xff" * 4


def test_param_record_default_is_an_int8_identity():
    record = isa.ParamRecord()
    assert Fraction(record.multiplier, 2 ** record.shift) == 1
    assert (record.bias, record.output_zero, record.weight_zero) == (0, 0, 0)
    assert (record.low, record.high) == (-128, 127)
    assert record.valid


@pytest.mark.parametrize("field", PARAM_VALUE_FIELDS, ids=lambda f: f.name)
def test_param_record_overflow_names_field_and_value(field):
    for value in out_of_range(field):
        with pytest.raises(ValueError, match=f"param record field '{field.name}' .* not {value}$"):
            isa.ParamRecord(**{field.name: value})


@pytest.mark.parametrize("shift", range(64))
def test_param_record_valid_shifts(shift):
    assert isa.ParamRecord(shift=shift).valid == (shift >= 1)


@pytest.mark.parametrize("rounding", range(4))
def test_param_record_every_rounding_code_is_defined(rounding):
    # The 2-bit field has no undefined code: FLOAT32 took the last one.
    assert isa.ParamRecord(rounding=rounding).valid
    assert Rounding(rounding).name


def test_rounding_values_fit_their_field():
    field = {f.name: f for f in isa.PARAM_FIELDS}["rounding"]
    assert all(field.min <= r <= field.max for r in Rounding)
    assert len(set(Rounding)) == field.max + 1


# -- status record --------------------------------------------------------------------------

status_records = st.builds(isa.StatusRecord, error=st.integers(0, 255),
                           error_opcode=st.integers(0, 255), commands=st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(status_records)
def test_status_record_round_trip(record):
    raw = record.encode()
    assert len(raw) == STATUS_RECORD_BYTES
    assert isa.StatusRecord.decode(raw) == record
    # Bytes after the record (beat padding) do not matter.
    assert isa.StatusRecord.decode(raw + b"\xff" * 5) == record
    view = data.Const(isa.status_layout(), int.from_bytes(raw, "little"))
    assert (view.error, view.error_opcode, view.reserved, view.commands) == (
        record.error, record.error_opcode, 0, record.commands)


def test_status_record_byte_positions():
    raw = isa.StatusRecord(error=5, error_opcode=3, commands=0x0A0B0C0D).encode()
    assert raw == bytes([5, 3, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A])


def test_status_record_overflow():
    with pytest.raises(ValueError, match="'commands' .* not 4294967296$"):
        isa.StatusRecord(commands=2**32).encode()


def test_status_error_code():
    assert isa.StatusRecord(error=4).error_code is ErrorCode.OVERSIZE
    assert isa.StatusRecord(error=200).error_code == 200


# -- error codes ----------------------------------------------------------------------------

def test_error_codes_have_distinct_descriptions():
    descriptions = [code.description for code in ErrorCode]
    assert all(descriptions) and len(set(descriptions)) == len(descriptions)
    assert ErrorCode.NONE == 0
    assert max(ErrorCode) < 1 << {f.name: f for f in isa.STATUS_FIELDS}["error"].width


# -- rules ----------------------------------------------------------------------------------

RULES = [(cls, rule) for cls in CLASSES for rule in cls.RULES]
RULE_IDS = [f"{cls.OPCODE.name}: {rule.doc}" for cls, rule in RULES]
RULE_CONFIG = NpuConfig(rows=3, cols=5, act_depth=7, weight_tiles=2, acc_depth=6)


def _rule(**overrides):
    return isa.Rule(**{"error": ErrorCode.ZERO_SIZE, "doc": "`x` is 0",
                       "condition": lambda f, c: f.x == 0, **overrides})


@pytest.mark.parametrize("error", [3, "ZERO_SIZE", None])
def test_rule_error_type_wrong(error):
    with pytest.raises(TypeError, match=f"^error must be an ErrorCode, not {error!r}$"):
        _rule(error=error)


@pytest.mark.parametrize("error", [ErrorCode.NONE, ErrorCode.BAD_OPCODE,
                                   ErrorCode.RESERVED_BITS, ErrorCode.BAD_PARAM])
def test_rule_error_generic_wrong(error):
    with pytest.raises(ValueError, match=f"^error must be one of ZERO_SIZE, OVERSIZE, "
                                         f"ADDR_RANGE, not {error.name}$"):
        _rule(error=error)


@pytest.mark.parametrize("doc", ["", "  ", None, 3])
def test_rule_doc_wrong(doc):
    with pytest.raises(TypeError, match="^doc must be a non-empty string, not "):
        _rule(doc=doc)


def test_rule_condition_wrong():
    with pytest.raises(TypeError, match="^condition must be callable, not 'x == 0'$"):
        _rule(condition="x == 0")


def test_rule_positional_wrong():
    with pytest.raises(TypeError):
        isa.Rule(ErrorCode.ZERO_SIZE, "`x` is 0", lambda f, c: f.x == 0)


def test_instruction_rules_wrong():
    with pytest.raises(TypeError, match="^NOP rules must be Rule objects, not 'x'$"):
        isa._instruction(Opcode.NOP, "test", rules=["x"])(type("Test", (isa.Instruction,), {}))
    unordered = [_rule(error=ErrorCode.OVERSIZE), _rule(error=ErrorCode.ZERO_SIZE)]
    with pytest.raises(ValueError, match="^NOP rules must be in ErrorCode order .*, not "
                                         "OVERSIZE, ZERO_SIZE$"):
        isa._instruction(Opcode.NOP, "test", Field("x", 4), rules=unordered)(
            type("Test", (isa.Instruction,), {}))


def test_field_by_name():
    assert isa.LoadAct.field("length") is isa.LoadAct.FIELDS[2]
    with pytest.raises(StopIteration):
        isa.LoadAct.field("slot")


@pytest.mark.parametrize("cls, rule", RULES, ids=RULE_IDS)
def test_rule_conditions_work_on_integers_and_on_amaranth_values(cls, rule):
    """A condition gives a bool on integer fields (not an int, as ``~`` would) and an
    Amaranth value on a view of the command word (``and``/``or``/``not`` would raise)."""
    for ins in (cls(), valid_instruction(RULE_CONFIG, cls.OPCODE, max)):
        assert isinstance(rule.condition(ins, RULE_CONFIG), bool)
    view = data.View(isa.command_layout(cls), Signal(COMMAND_WIDTH))
    assert isinstance(Value.cast(rule.condition(view, RULE_CONFIG)), Value)
    # The doc names a field the rule reads.
    assert any(f"`{f.name}" in rule.doc for f in cls.FIELDS), rule.doc


@pytest.mark.parametrize("cls", CLASSES, ids=CLASS_IDS)
def test_valid_values_are_the_values_that_pass_every_rule(cls):
    rng = random.Random(cls.OPCODE)
    for _ in range(5):
        ins = valid_instruction(RULE_CONFIG, cls.OPCODE, rng.randint)
        assert ins.error(RULE_CONFIG) == ErrorCode.NONE
        for f in cls.FIELDS:
            values = ins.valid_values(f.name, RULE_CONFIG)
            # By brute force over the values a small configuration makes interesting.
            candidates = range(f.min, min(f.max, 20) + 1)
            passing = [v for v in candidates if dataclasses.replace(
                ins, **{f.name: v}).error(RULE_CONFIG) == ErrorCode.NONE]
            assert [int(v) for v in values if v <= 20] == passing
            assert getattr(ins, f.name) in values
            if not cls.RULES:
                assert len(values) == f.max - f.min + 1


def test_error_takes_the_first_code_in_errorcode_order():
    c = RULE_CONFIG
    assert isa.LoadAct(addr=c.act_depth, count=0, length=c.rows + 1).error(c) \
        == ErrorCode.ZERO_SIZE
    assert isa.LoadAct(addr=c.act_depth, count=1, length=c.rows + 1).error(c) \
        == ErrorCode.OVERSIZE
    assert isa.LoadAct(addr=c.act_depth, count=1, length=c.rows).error(c) \
        == ErrorCode.ADDR_RANGE
    assert isa.LoadAct(addr=c.act_depth - 1, count=1, length=c.rows).error(c) == ErrorCode.NONE


def test_status_shapes_and_addressable_limits_come_from_the_fields():
    for f in isa.STATUS_FIELDS:
        assert isa.status_shape(f.name).width == f.width
    limits = isa.addressable_limits()
    assert limits["act_depth"] == 1 << isa.LoadAct.field("addr").width
    assert limits["acc_depth"] == 1 << isa.Store.field("acc_addr").width
    assert limits["weight_tiles"] == 1 << isa.Matmul.field("slot").width
