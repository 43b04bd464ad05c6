"""NpuConfig: validation of every field, the derived constants and immutability."""

import dataclasses
from math import ceil

import pytest

from hw import isa
from hw.config import ACC_WIDTH, COMMAND_WIDTH, PARAM_RECORD_BYTES, STATUS_RECORD_BYTES, NpuConfig

FIELDS = [f.name for f in dataclasses.fields(NpuConfig)]
#: The fields whose limit is fixed (``requant_lanes``'s is ``cols``).
SIZES = [name for name in FIELDS if name != "requant_lanes"]
#: Largest value of each field, as the field widths of the instruction set dictate.
LIMITS = {"rows": 256, "cols": 256, "act_depth": 1 << 16, "weight_tiles": 256,
          "acc_depth": 1 << 16, "data_bytes": 256}


def test_fields_are_the_documented_ones():
    assert FIELDS == ["rows", "cols", "act_depth", "weight_tiles", "acc_depth", "data_bytes",
                      "requant_lanes"]


def test_defaults():
    assert NpuConfig().as_dict() == {"rows": 8, "cols": 8, "act_depth": 512,
                                     "weight_tiles": 4, "acc_depth": 512, "data_bytes": 8,
                                     "requant_lanes": 8}


@pytest.mark.parametrize("cols, data_bytes", [(8, 8), (12, 8), (3, 16), (5, 1)])
def test_requant_lanes_default_keeps_up_with_the_port(cols, data_bytes):
    config = NpuConfig(cols=cols, data_bytes=data_bytes)
    assert config.requant_lanes == config.default_requant_lanes == min(cols, data_bytes)
    # A requantized row (one byte a column) never occupies the lanes longer than its beats.
    for n in range(1, cols + 1):
        assert config.requant_cycles(n) <= config.beats(n)


@pytest.mark.parametrize("lanes", [1, 3, 12])
def test_requant_cycles_cover_the_row(lanes):
    config = NpuConfig(cols=12, requant_lanes=lanes)
    for n in range(1, 13):
        cycles = config.requant_cycles(n)
        assert cycles * lanes >= n > (cycles - 1) * lanes


def test_requant_lanes_above_cols_wrong():
    with pytest.raises(ValueError, match=r"^requant_lanes must be at most cols \(4\), not 5$"):
        NpuConfig(cols=4, requant_lanes=5)
    assert NpuConfig(cols=4, requant_lanes=4).requant_lanes == 4


# -- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIELDS)
@pytest.mark.parametrize("value", [0, -1, -256])
def test_not_positive_wrong(name, value):
    with pytest.raises(TypeError, match=f"^{name} must be a positive integer, not {value}$"):
        NpuConfig(**{name: value})


@pytest.mark.parametrize("name, value", [
    (name, value) for name in FIELDS for value in [2.0, "8", None, True]
    # None is requant_lanes' default: min(cols, data_bytes)
    if not (name == "requant_lanes" and value is None)])
def test_not_an_integer_wrong(name, value):
    # True is an int to Python but never a size; floats are refused even when whole.
    with pytest.raises(TypeError, match=f"^{name} must be a positive integer, not "
                                        f"{repr(value).replace('.', '[.]')}$"):
        NpuConfig(**{name: value})


@pytest.mark.parametrize("name", SIZES)
def test_above_limit_wrong(name):
    limit = LIMITS[name]
    with pytest.raises(ValueError, match=f"^{name} must be at most {limit}, not {limit + 1}$"):
        NpuConfig(**{name: limit + 1})


@pytest.mark.parametrize("name", SIZES)
def test_limits_are_accepted(name):
    assert getattr(NpuConfig(**{name: LIMITS[name]}), name) == LIMITS[name]
    assert getattr(NpuConfig(**{name: 1}), name) == 1


def test_positional_arguments_wrong():
    with pytest.raises(TypeError):
        NpuConfig(4, 4)


def test_limits_fit_the_instruction_fields():
    """Every buffer position and size the configuration allows is addressable."""
    def width(cls, name):
        return cls.field_offsets()[name][1]
    # Addresses run 0..depth-1, slots 0..weight_tiles-1, counts and dimensions 1..limit.
    assert LIMITS["act_depth"] - 1 < 1 << width(isa.LoadAct, "addr")
    assert LIMITS["acc_depth"] - 1 < 1 << width(isa.Matmul, "acc_addr")
    assert LIMITS["weight_tiles"] - 1 < 1 << width(isa.LoadWeight, "slot")
    assert LIMITS["weight_tiles"] - 1 < 1 << width(isa.Matmul, "slot")
    assert LIMITS["rows"] < 1 << width(isa.LoadAct, "length")
    assert LIMITS["rows"] < 1 << width(isa.LoadWeight, "k")
    assert LIMITS["cols"] < 1 << width(isa.LoadWeight, "n")
    assert LIMITS["cols"] < 1 << width(isa.LoadParams, "count")
    assert LIMITS["cols"] < 1 << width(isa.Store, "n")


# -- derived constants ----------------------------------------------------------------------

CONFIGS = [NpuConfig(), NpuConfig(rows=2, cols=3, data_bytes=3),
           NpuConfig(rows=16, cols=4, weight_tiles=2, data_bytes=1),
           NpuConfig(rows=1, cols=1, act_depth=1, weight_tiles=1, acc_depth=1, data_bytes=1),
           NpuConfig(rows=256, cols=256, data_bytes=256)]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_derived_constants(config):
    assert config.data_width == 8 * config.data_bytes
    assert config.weight_depth == config.weight_tiles * config.rows
    # The deserializer must hold a whole activation row, weight row or parameter record.
    assert config.vector_bytes == max(config.rows, config.cols, PARAM_RECORD_BYTES)
    # The serializer must hold a whole raw int32 row or the status record.
    assert config.out_vector_bytes == max(4 * config.cols, STATUS_RECORD_BYTES)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_array_latency_covers_the_wavefront(config):
    # A result row cannot leave before the skewed wavefront has crossed every row and column.
    assert isinstance(config.array_latency, int)
    assert config.array_latency >= config.rows + config.cols - 1
    if config.rows < LIMITS["rows"]:
        taller = dataclasses.replace(config, rows=config.rows + 1)
        assert taller.array_latency > config.array_latency
    if config.cols < LIMITS["cols"]:
        wider = dataclasses.replace(config, cols=config.cols + 1)
        assert wider.array_latency > config.array_latency
    # The weights are taken before the result is ready: the bank is free before it leaves,
    # but not before the wavefront has reached the last cell.
    assert config.rows + config.cols - 2 <= config.weight_hold < config.array_latency


@pytest.mark.parametrize("data_bytes", [1, 3, 8, 256])
def test_beats_round_up_to_whole_beats(data_bytes):
    config = NpuConfig(data_bytes=data_bytes)
    for nbytes in range(0, 3 * data_bytes + 2):
        beats = config.beats(nbytes)
        assert beats == ceil(nbytes / data_bytes)
        assert beats * data_bytes >= nbytes > (beats - 1) * data_bytes or nbytes == beats == 0


def test_module_constants_match_the_isa():
    assert COMMAND_WIDTH == 64
    assert ACC_WIDTH == 32
    assert sum(f.width for f in isa.PARAM_FIELDS) == 8 * PARAM_RECORD_BYTES
    assert sum(f.width for f in isa.STATUS_FIELDS) == 8 * STATUS_RECORD_BYTES


def test_str_names_every_size():
    text = str(NpuConfig(rows=2, cols=3, act_depth=17, weight_tiles=5, acc_depth=19,
                         data_bytes=7))
    assert text == ("2x3 array, act 17, weights 5 tiles, acc 19, 7-byte streams, "
                    "3 requantizer lanes")


def test_as_dict_round_trips():
    config = NpuConfig(rows=3, cols=5, act_depth=9, weight_tiles=2, acc_depth=11, data_bytes=4)
    assert NpuConfig(**config.as_dict()) == config
    narrow = NpuConfig(cols=5, requant_lanes=2)
    assert NpuConfig(**narrow.as_dict()) == narrow


# -- immutability ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIELDS)
def test_frozen(name):
    config = NpuConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, name, 4)
    assert getattr(config, name) == getattr(NpuConfig(), name)


def test_equal_configs_hash_equal():
    assert NpuConfig(rows=4) == NpuConfig(rows=4)
    assert hash(NpuConfig(rows=4)) == hash(NpuConfig(rows=4))
    assert NpuConfig(rows=4) != NpuConfig(rows=5)
    assert len({NpuConfig(), NpuConfig(), NpuConfig(cols=4)}) == 2


def test_replace_validates():
    with pytest.raises(TypeError, match="^cols must be a positive integer, not 0$"):
        dataclasses.replace(NpuConfig(), cols=0)


def test_parse_config_round_trips_spec():
    from hw.config import parse_config
    config = NpuConfig(rows=4, cols=3, data_bytes=2)
    assert config.spec == "rows=4,cols=3,data_bytes=2"
    assert parse_config(config.spec) == config
    assert parse_config("") == parse_config(None) == NpuConfig()
    assert parse_config(" rows = 2 , cols=2") == NpuConfig(rows=2, cols=2)
    # requant_lanes is in the spec only when it differs from min(cols, data_bytes).
    assert NpuConfig(cols=12, data_bytes=4, requant_lanes=4).spec == "cols=12,data_bytes=4"
    lanes = NpuConfig(rows=12, cols=12, requant_lanes=3)
    assert lanes.spec == "rows=12,cols=12,requant_lanes=3"
    assert parse_config(lanes.spec) == lanes


@pytest.mark.parametrize("text, message", [
    ("depth=3", "configuration item 'depth=3' must be name=value with a name of rows, cols"),
    ("rows", "configuration item 'rows' must be name=value"),
    ("rows=four", "configuration item 'rows' must be an integer, not 'four'"),
    ("rows=2,rows=3", "configuration item 'rows' is given twice"),
    ("cols=0", "cols must be a positive integer, not 0"),
    ("act_depth=70000", "act_depth must be at most 65536, not 70000"),
    ("requant_lanes=0", "requant_lanes must be a positive integer, not 0"),
    ("cols=4,requant_lanes=5", r"requant_lanes must be at most cols \(4\), not 5"),
])
def test_parse_config_wrong(text, message):
    from hw.config import parse_config
    with pytest.raises(ValueError, match=message):
        parse_config(text)
