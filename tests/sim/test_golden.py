"""The golden model against plain NumPy: GEMMs, data framing, errors and status.

The expected results come from ``numpy`` integer matmuls and from the big-integer
requantization reference, never from the model itself.  GEMMs run as the driver lowers
them (``driver.lowering.lower_matmul``); other command streams are built here from
:mod:`hw.isa` (``sim.programs.CommandStream``).
"""

import time
from dataclasses import dataclass

import numpy as np
import pytest
from requant_reference import requantize_reference

from driver.lowering import lower_matmul
from hw import isa
from hw.config import NpuConfig
from hw.isa import ErrorCode, Opcode, Rounding
from sim.golden import DataUnderflow, GoldenNpu
from sim.programs import CommandStream

#: Beat padding on the data-in stream is filled with this, to show the chip ignores it.
PAD = 0xA5

CONFIGS = [
    NpuConfig(rows=4, cols=4, act_depth=16, weight_tiles=2, acc_depth=16, data_bytes=1),
    NpuConfig(rows=2, cols=3, act_depth=8, weight_tiles=1, acc_depth=12, data_bytes=3),
    NpuConfig(rows=8, cols=8, act_depth=32, weight_tiles=4, acc_depth=24, data_bytes=8),
    NpuConfig(rows=3, cols=5, act_depth=10, weight_tiles=3, acc_depth=10, data_bytes=3),
]

#: (activations signed, weights signed) and whether weights carry a zero point.
SCHEMES = {
    "u8_x_i8": (False, True, False),
    "i8_x_i8": (True, True, False),
    "u8_x_u8_zp": (False, False, True),
    "i8_x_u8_zp": (True, False, True),
}


# -- stream framing -------------------------------------------------------------------------

def beats_of(byte_rows, config, fill=PAD):
    """Data-in bytes for a block of byte rows, each row padded to whole beats."""
    byte_rows = np.asarray(byte_rows, dtype=np.uint8)
    count, length = byte_rows.shape
    stride = config.beats(length) * config.data_bytes
    framed = np.full((count, stride), fill, dtype=np.uint8)
    framed[:, :length] = byte_rows
    return framed.tobytes()


def records_of(records, config):
    """Data-in bytes for requantization records (ParamRecords or raw 16-byte records),
    one record per whole-beat block."""
    return beats_of([list(r if isinstance(r, bytes) else r.encode()) for r in records], config)


def with_field(record, name, value):
    """The bytes of ``record`` with record field ``name`` (a reserved one too) set to
    ``value``, from the field's place in :data:`hw.isa.PARAM_FIELDS`."""
    offset = 0
    for f in isa.PARAM_FIELDS:
        if f.name == name:
            break
        offset += f.width
    word = int.from_bytes(record.encode(), "little")
    word &= ~(((1 << f.width) - 1) << offset)
    word |= (value & ((1 << f.width) - 1)) << offset
    return word.to_bytes(16, "little")


def as_bytes(values, signed):
    """Integers as the bytes of the data stream (int8 two's complement or uint8)."""
    values = np.asarray(values)
    return values.astype(np.int8).view(np.uint8) if signed else values.astype(np.uint8)


def unframe(data_out, count, length, config):
    """Split data-out bytes into ``count`` rows of ``length`` bytes, checking the padding."""
    stride = config.beats(length) * config.data_bytes
    assert len(data_out) == count * stride
    rows = np.frombuffer(data_out, dtype=np.uint8).reshape(count, stride)
    assert not rows[:, length:].any(), "beat padding on data-out must be zero"
    return rows[:, :length]


def status_bytes(config, error=0, error_opcode=0, commands=0):
    record = isa.StatusRecord(error=error, error_opcode=error_opcode, commands=commands)
    return beats_of([list(record.encode())], config, fill=0)


def run(npu, program):
    """Run a :class:`~sim.programs.CommandStream` on ``npu``."""
    return npu.run(program.commands, program.data_in)


# -- GEMMs as the driver lowers them --------------------------------------------------------

@dataclass
class Gemm:
    """``a @ (w - weight_zero)``, requantized per column by ``records``."""
    a: np.ndarray                  # (M, K) activations as integers
    a_signed: bool
    w: np.ndarray                  # (K, N) weights as integers
    w_signed: bool
    records: list                  # N ParamRecords; weight_zero lives in them

    @property
    def weight_zero(self):
        return np.array([r.weight_zero for r in self.records])

    def expected_acc(self):
        exact = self.a.astype(np.int64) @ (self.w.astype(np.int64) - self.weight_zero)
        return ((exact + 2**31) % 2**32) - 2**31

    def expected_requantized(self):
        acc = self.expected_acc()
        fields = ("bias", "multiplier", "shift", "rounding", "output_zero", "low", "high")
        return np.array([[requantize_reference(int(value), **{f: getattr(self.records[j], f)
                                                              for f in fields})
                          for j, value in enumerate(row)] for row in acc.tolist()])


def gemm_pass(config, gemm, raw):
    """The driver's pass for ``gemm`` and its data-in stream."""
    chip_pass = lower_matmul(gemm.w.astype(np.int8 if gemm.w_signed else np.uint8),
                             batch=len(gemm.a), config=config, act_signed=gemm.a_signed,
                             records=gemm.records, raw=raw)
    return chip_pass, chip_pass.data_in(gemm.a.astype(np.int8 if gemm.a_signed else np.uint8))


def run_gemm(npu, gemm, raw):
    """Run ``gemm`` tiled on ``npu``; the (M, N) result as int32 or as output bytes."""
    config = npu.config
    chip_pass, data_in = gemm_pass(config, gemm, raw)
    result = npu.run(chip_pass.commands, data_in)
    assert result.status.error == ErrorCode.NONE
    assert result.data_in_used == len(data_in)
    out = np.zeros((gemm.a.shape[0], gemm.w.shape[1]), dtype=np.int64)
    position, width = 0, 4 if raw else 1
    for block in chip_pass.outputs:
        size = block.m * config.beats(width * block.n) * config.data_bytes
        rows = unframe(result.data_out[position:position + size], block.m, width * block.n,
                       config)
        values = rows.copy().view("<i4") if raw else rows
        out[block.m0:block.m0 + block.m, block.n0:block.n0 + block.n] = values
        position += size
    # The pass ends with a status read.
    assert result.data_out[position:] == status_bytes(config,
                                                      commands=result.status.commands - 1)
    return out


def random_gemm(rng, m, k, n, scheme):
    a_signed, w_signed, zero_point = SCHEMES[scheme]
    low8, high8 = (-128, 127) if a_signed else (0, 255)
    a = rng.integers(low8, high8 + 1, (m, k))
    w = rng.integers(-128, 128, (k, n)) if w_signed else rng.integers(0, 256, (k, n))
    records = []
    for _ in range(n):
        int8_out = rng.random() < 0.5
        output_zero = int(rng.integers(-20, 20)) if int8_out else int(rng.integers(100, 150))
        low, high = (-128, 127) if int8_out else (0, 255)
        if rng.random() < 0.3:
            low = max(low, output_zero)                           # fused ReLU
        records.append(isa.ParamRecord(
            bias=int(rng.integers(-5000, 5000)),
            multiplier=int(rng.integers(1 << 30, 1 << 31)),
            shift=int(rng.integers(36, 44)),
            rounding=int(rng.integers(0, 4)),
            weight_zero=int(rng.integers(0, 256)) if zero_point else 0,
            output_zero=output_zero, low=low, high=high))
    return Gemm(a=a, a_signed=a_signed, w=w, w_signed=w_signed, records=records)


# -- GEMMs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_random_gemms_raw(config, scheme):
    rng = np.random.default_rng(config.rows * 100 + config.cols * 10 + config.data_bytes)
    npu = GoldenNpu(config)
    # One GEMM inside a single tile and one spanning several tiles in M, K and N.
    for m, k, n in [(1, config.rows, config.cols),
                    (config.act_depth + 3, 3 * config.rows + 1, 2 * config.cols + 1)]:
        gemm = random_gemm(rng, m, k, n, scheme)
        np.testing.assert_array_equal(run_gemm(npu, gemm, raw=True), gemm.expected_acc())


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_random_gemms_requantized(config, scheme):
    rng = np.random.default_rng(config.rows * 7 + config.cols * 3 + config.data_bytes)
    npu = GoldenNpu(config)
    gemm = random_gemm(rng, config.act_depth + 1, 2 * config.rows + 1, 2 * config.cols - 1,
                       scheme)
    out = run_gemm(npu, gemm, raw=False)
    expected = gemm.expected_requantized()
    np.testing.assert_array_equal(out, expected & 0xFF)
    # The test only means something if the outputs are neither all clamped nor constant.
    assert len(np.unique(expected)) > 10


def test_weight_zero_points_are_per_column():
    config = CONFIGS[0]
    npu = GoldenNpu(config)
    zero_points = [0, 1, 128, 255]
    records = [isa.ParamRecord(weight_zero=z) for z in zero_points]
    a = np.ones((1, config.rows), dtype=np.int64)
    w = np.full((config.rows, config.cols), 200)
    gemm = Gemm(a=a, a_signed=False, w=w, w_signed=False, records=records)
    out = run_gemm(npu, gemm, raw=True)
    assert out.tolist() == [[config.rows * (200 - z) for z in zero_points]]


def test_parameter_sets_are_independent():
    """LOAD_PARAMS writes one set; LOAD_WEIGHT and STORE read the set they name."""
    config = CONFIGS[0]
    npu = GoldenNpu(config)
    halve = isa.ParamRecord(multiplier=1 << 30, shift=31, weight_zero=10, low=-256, high=255)
    third = isa.ParamRecord(multiplier=(1 << 31) // 3, shift=31, weight_zero=20, low=-256,
                            high=255)
    program = CommandStream(config)
    program.add(isa.LoadParams(count=config.cols, param_set=0),
                records_of([halve] * config.cols, config))
    program.add(isa.LoadParams(count=config.cols, param_set=1),
                records_of([third] * config.cols, config))
    program.add(isa.LoadAct(count=1, length=1), beats_of([[3]], config))
    for slot, param_set in ((0, 0), (1, 1)):
        program.add(isa.LoadWeight(slot=slot, k=1, n=config.cols, param_set=param_set),
                    beats_of(np.full((1, config.cols), 100), config))
    for slot, param_set in ((0, 1), (1, 0)):
        program.add(isa.Matmul(count=1, slot=slot))
        program.add(isa.Store(count=1, n=config.cols, param_set=param_set))
    out = unframe(run(npu, program).data_out, 2, config.cols, config).view(np.int8)
    # Slot 0 holds 100 - 10, requantized by set 1 (x 1/3); slot 1 holds 100 - 20 (x 1/2).
    assert out[0].tolist() == [round(3 * 90 / 3)] * config.cols
    assert out[1].tolist() == [round(3 * 80 / 2)] * config.cols


def test_accumulator_wraps_at_int32():
    config = CONFIGS[2]
    npu = GoldenNpu(config)
    program = CommandStream(config)
    program.add(isa.LoadAct(count=1, length=config.rows),
                beats_of(np.full((1, config.rows), 255), config))
    program.add(isa.LoadWeight(k=config.rows, n=config.cols),
                beats_of(np.full((config.rows, config.cols), 255), config))
    step = config.rows * 255 * 255
    repeats = 2**31 // step + 1                      # one more than fits in int32
    for index in range(repeats):
        program.add(isa.Matmul(count=1, accumulate=int(index > 0)))
    program.add(isa.Store(count=1, n=config.cols, raw=1))
    # The requantizer sees the wrapped value too (2**30 / 2**31 halves it).
    program.add(isa.LoadParams(count=1), records_of([isa.ParamRecord(shift=31, low=-256,
                                                                     high=255)], config))
    program.add(isa.Store(count=1, n=1))
    data_out = run(npu, program).data_out
    raw_bytes = config.beats(4 * config.cols) * config.data_bytes
    wrapped = repeats * step - 2**32
    out = unframe(data_out[:raw_bytes], 1, 4 * config.cols, config).copy().view("<i4")
    assert (out == wrapped).all()
    requantized = unframe(data_out[raw_bytes:], 1, 1, config)
    expected = requantize_reference(wrapped, bias=0, multiplier=1 << 30, shift=31,
                                    rounding=Rounding.HALF_EVEN, output_zero=0, low=-256,
                                    high=255)
    assert requantized.tolist() == [[expected & 0xFF]]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_matmul_overwrites_unless_accumulating(config):
    npu = GoldenNpu(config)
    a = np.arange(1, config.rows + 1)[None, :]
    program = CommandStream(config)
    program.add(isa.LoadAct(count=1, length=config.rows), beats_of(a, config))
    program.add(isa.LoadWeight(k=config.rows, n=config.cols),
                beats_of(np.ones((config.rows, config.cols)), config))
    program.add(isa.Matmul(count=1, acc_addr=1))
    program.add(isa.Matmul(count=1, acc_addr=1, accumulate=1))
    program.add(isa.Matmul(count=1, acc_addr=1, accumulate=1))
    program.add(isa.Matmul(count=1, acc_addr=2, accumulate=1))     # onto the reset zeros
    program.add(isa.Matmul(count=1, acc_addr=2))
    program.add(isa.Store(acc_addr=1, count=2, n=config.cols, raw=1))
    out = unframe(run(npu, program).data_out, 2, 4 * config.cols, config).copy().view("<i4")
    total = int(a.sum())
    assert out.tolist() == [[3 * total] * config.cols, [total] * config.cols]


def full_inputs(config, activation, weight):
    """A program that fills one activation vector and weight slot 0 with constants."""
    return CommandStream(config).add(
        isa.LoadAct(count=1, length=config.rows),
        beats_of(np.full((1, config.rows), activation), config)).add(
        isa.LoadWeight(k=config.rows, n=config.cols),
        beats_of(np.full((config.rows, config.cols), weight), config))


def matmul_row(npu):
    """MATMUL of activation vector 0 with slot 0, stored raw."""
    program = CommandStream(npu.config).add(isa.Matmul(count=1))
    program.add(isa.Store(count=1, n=npu.config.cols, raw=1))
    data_out = run(npu, program).data_out
    return unframe(data_out, 1, 4 * npu.config.cols, npu.config).copy().view("<i4").tolist()


def test_short_activation_vectors_zero_the_other_lanes():
    config = CONFIGS[2]
    npu = GoldenNpu(config)
    run(npu, full_inputs(config, activation=7, weight=3))
    run(npu, CommandStream(config).add(isa.LoadAct(count=1, length=2),
                                       beats_of([[5, 6]], config)))
    assert matmul_row(npu) == [[(5 + 6) * 3] * config.cols]


def test_short_weight_tiles_zero_the_rest_of_the_tile():
    config = CONFIGS[2]
    npu = GoldenNpu(config)
    run(npu, full_inputs(config, activation=7, weight=3))
    run(npu, CommandStream(config).add(isa.LoadWeight(k=2, n=3),
                                       beats_of(np.ones((2, 3)), config)))
    assert matmul_row(npu) == [[7 * 2] * 3 + [0] * (config.cols - 3)]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_store_pads_rows_to_beats(config):
    npu = GoldenNpu(config)
    for n in range(1, config.cols + 1):
        for raw in (0, 1):
            result = run(npu, CommandStream(config).add(isa.Store(count=3, n=n, raw=raw)))
            width = 4 if raw else 1
            assert len(result.data_out) == 3 * -(-width * n // config.data_bytes) \
                * config.data_bytes
            unframe(result.data_out, 3, width * n, config)      # checks the zero padding


def test_tiled_256_cube_on_the_default_config():
    config = NpuConfig()
    rng = np.random.default_rng(256)
    gemm = random_gemm(rng, 256, 256, 256, "u8_x_i8")
    npu = GoldenNpu(config)
    start = time.perf_counter()
    raw = run_gemm(npu, gemm, raw=True)
    requantized = run_gemm(npu, gemm, raw=False)
    elapsed = time.perf_counter() - start
    print(f"256x256x256 GEMM, raw and requantized, on the golden model ({config}): "
          f"{elapsed:.2f} s")
    np.testing.assert_array_equal(raw, gemm.expected_acc())
    np.testing.assert_array_equal(requantized, gemm.expected_requantized() & 0xFF)
    assert npu.macs == 2 * 256 * 256 * 256


# -- errors ---------------------------------------------------------------------------------

ERROR_CONFIG = NpuConfig(rows=4, cols=4, act_depth=16, weight_tiles=2, acc_depth=16,
                         data_bytes=4)


def reserved_bit(cls):
    return cls().encode() | 1 << 63


ERROR_CASES = [
    *[(f"opcode_{op}", op, ErrorCode.BAD_OPCODE)
      for op in sorted(set(range(16)) - set(isa.INSTRUCTIONS))],
    *[(f"reserved_{cls.OPCODE.name}", reserved_bit(cls), ErrorCode.RESERVED_BITS)
      for cls in isa.INSTRUCTIONS.values()],
    ("params_count_0", isa.LoadParams(count=0), ErrorCode.ZERO_SIZE),
    ("act_count_0", isa.LoadAct(count=0, length=1), ErrorCode.ZERO_SIZE),
    ("act_length_0", isa.LoadAct(count=1, length=0), ErrorCode.ZERO_SIZE),
    ("weight_k_0", isa.LoadWeight(k=0, n=1), ErrorCode.ZERO_SIZE),
    ("weight_n_0", isa.LoadWeight(k=1, n=0), ErrorCode.ZERO_SIZE),
    ("matmul_count_0", isa.Matmul(count=0), ErrorCode.ZERO_SIZE),
    ("store_count_0", isa.Store(count=0, n=1), ErrorCode.ZERO_SIZE),
    ("store_n_0", isa.Store(count=1, n=0), ErrorCode.ZERO_SIZE),
    ("zero_before_oversize", isa.LoadWeight(k=0, n=5), ErrorCode.ZERO_SIZE),
    ("params_count_cols+1", isa.LoadParams(count=5), ErrorCode.OVERSIZE),
    ("act_length_rows+1", isa.LoadAct(count=1, length=5), ErrorCode.OVERSIZE),
    ("weight_k_rows+1", isa.LoadWeight(k=5, n=1), ErrorCode.OVERSIZE),
    ("weight_n_cols+1", isa.LoadWeight(k=1, n=5), ErrorCode.OVERSIZE),
    ("store_n_cols+1", isa.Store(count=1, n=5), ErrorCode.OVERSIZE),
    ("oversize_before_range", isa.LoadWeight(slot=9, k=5, n=1), ErrorCode.OVERSIZE),
    ("act_past_end", isa.LoadAct(addr=15, count=2, length=1), ErrorCode.ADDR_RANGE),
    ("act_addr_at_end", isa.LoadAct(addr=16, count=1, length=1), ErrorCode.ADDR_RANGE),
    ("weight_slot", isa.LoadWeight(slot=2, k=1, n=1), ErrorCode.ADDR_RANGE),
    ("matmul_act_past_end", isa.Matmul(act_addr=15, count=2), ErrorCode.ADDR_RANGE),
    ("matmul_acc_past_end", isa.Matmul(acc_addr=15, count=2), ErrorCode.ADDR_RANGE),
    ("matmul_slot", isa.Matmul(count=1, slot=2), ErrorCode.ADDR_RANGE),
    ("store_past_end", isa.Store(acc_addr=16, count=1, n=1), ErrorCode.ADDR_RANGE),
]


def word_of(command):
    return command if isinstance(command, int) else command.encode()


def test_error_cases_cover_every_error_code():
    assert {code for _, _, code in ERROR_CASES} | {ErrorCode.BAD_PARAM, ErrorCode.NONE} \
        == set(ErrorCode)


@pytest.mark.parametrize("name, command, code", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_command_errors_latch_and_skip(name, command, code):
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    word = word_of(command)
    # Commands after the error would consume data and write output, were they executed.
    program = CommandStream(config)
    program.add(isa.LoadAct(count=1, length=4), beats_of([[1, 2, 3, 4]], config))
    program.add(isa.Store(count=1, n=4, raw=1))
    program.add(isa.Nop()).add(isa.Fence())
    program.add(isa.ReadStatus())
    result = npu.run([word] + program.commands, program.data_in)
    assert result.data_in_used == 0
    assert result.data_out == status_bytes(config, code, word & 0xF, commands=5)
    assert result.status == isa.StatusRecord(error=code, error_opcode=word & 0xF, commands=6)


#: Records that break each rule of PARAM_RULES, and one that breaks both.
BAD_RECORDS = [("shift", 0), ("reserved0", 1), ("reserved1", 1), ("reserved1", 1 << 19),
               ("reserved1", (1 << 20) - 1)]


@pytest.mark.parametrize("field, value", BAD_RECORDS)
def test_bad_param_latches_and_keeps_the_stream_aligned(field, value):
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    good = isa.ParamRecord(multiplier=1 << 30, shift=31, low=-256, high=255)
    records = [good, with_field(isa.ParamRecord(), field, value), good]
    program = CommandStream(config)
    program.add(isa.LoadParams(count=3), records_of(records, config))
    program.add(isa.LoadAct(count=1, length=4), beats_of([[1, 2, 3, 4]], config))
    result = run(npu, program)
    # The whole LOAD_PARAMS payload is consumed, the skipped LOAD_ACT takes nothing.
    assert result.data_in_used == 3 * config.beats(16) * config.data_bytes
    assert result.status == isa.StatusRecord(error=ErrorCode.BAD_PARAM,
                                             error_opcode=Opcode.LOAD_PARAMS, commands=2)
    # Records from the bad one on are not written: columns 1 and 2 keep the defaults.
    program = CommandStream(config).add(isa.ClearError())
    program.add(isa.LoadAct(count=1, length=1), beats_of([[100]], config))
    program.add(isa.LoadWeight(k=1, n=4), beats_of([[1, 1, 1, 1]], config))
    program.add(isa.Matmul(count=1)).add(isa.Store(count=1, n=4))
    out = unframe(run(npu, program).data_out, 1, 4, config)
    # Column 0 was written before the bad record (scale 1/2); the others keep scale 1.
    assert out.tolist() == [[50, 100, 100, 100]]


def test_first_error_stays_latched():
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    words = [isa.Nop().encode(), 9, isa.LoadAct(count=0).encode(), reserved_bit(isa.Store)]
    result = npu.run(words)
    assert result.status == isa.StatusRecord(error=ErrorCode.BAD_OPCODE, error_opcode=9,
                                             commands=4)


def test_skipped_commands_change_nothing():
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    gemm = random_gemm(np.random.default_rng(5), 3, 4, 4, "u8_x_i8")
    before = run_gemm(npu, gemm, raw=True)
    # Latch an error, then try to overwrite activations, weights, parameters and results.
    program = CommandStream(config)
    program.add(isa.LoadAct(count=0))
    program.add(isa.LoadParams(count=4), records_of([isa.ParamRecord(shift=1)] * 4, config))
    program.add(isa.LoadAct(count=3, length=4), beats_of(np.full((3, 4), 9), config))
    program.add(isa.LoadWeight(k=4, n=4), beats_of(np.full((4, 4), 9), config))
    program.add(isa.Matmul(count=3))
    program.add(isa.Store(count=3, n=4, raw=1))
    result = run(npu, program)
    assert result.data_out == b"" and result.data_in_used == 0
    assert result.status.error == ErrorCode.ZERO_SIZE
    # After CLEAR_ERROR the old results, inputs and parameters are all still there.
    program = CommandStream(config).add(isa.ClearError())
    program.add(isa.Store(count=3, n=4, raw=1))
    program.add(isa.Matmul(count=3, acc_addr=3))
    program.add(isa.Store(acc_addr=3, count=3, n=4, raw=0))
    result = run(npu, program)
    raw = unframe(result.data_out[:3 * 16], 3, 16, config).copy().view("<i4")
    np.testing.assert_array_equal(raw, gemm.expected_acc())
    requantized = unframe(result.data_out[3 * 16:], 3, 4, config)
    np.testing.assert_array_equal(requantized, gemm.expected_requantized() & 0xFF)
    assert result.status.error == ErrorCode.NONE
    np.testing.assert_array_equal(before, gemm.expected_acc())


def test_clear_error_recovers():
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    npu.run([isa.Store(count=1, n=5).encode()])
    assert npu.status().error == ErrorCode.OVERSIZE
    result = npu.run([isa.ClearError().encode(), isa.ReadStatus().encode()])
    assert result.data_out == status_bytes(config, commands=2)
    assert result.status == isa.StatusRecord(commands=3)
    gemm = random_gemm(np.random.default_rng(6), 5, 7, 6, "i8_x_u8_zp")
    np.testing.assert_array_equal(run_gemm(npu, gemm, raw=True), gemm.expected_acc())


def test_always_executed_commands_run_with_an_error_latched():
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    result = npu.run([15, isa.Nop().encode(), isa.Fence().encode(), isa.ReadStatus().encode(),
                      reserved_bit(isa.ReadStatus), isa.ReadStatus().encode()])
    # The malformed READ_STATUS is an error itself, so it sends nothing.
    assert result.data_out == (status_bytes(config, ErrorCode.BAD_OPCODE, 15, commands=3)
                               + status_bytes(config, ErrorCode.BAD_OPCODE, 15, commands=5))


# -- status and persistence -----------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_read_status_counts_commands_across_runs(config):
    npu = GoldenNpu(config)
    first = npu.run([isa.Nop().encode()] * 3 + [isa.ReadStatus().encode()])
    assert first.data_out == status_bytes(config, commands=3)
    second = npu.run([isa.ReadStatus().encode(), isa.Fence().encode(),
                      isa.ReadStatus().encode()])
    assert second.data_out == status_bytes(config, commands=4) + status_bytes(config,
                                                                              commands=6)
    assert second.status == isa.StatusRecord(commands=7)
    assert isa.StatusRecord.decode(second.data_out[-config.beats(8) * config.data_bytes:]) \
        == isa.StatusRecord(commands=6)


def test_command_count_wraps_at_32_bits():
    npu = GoldenNpu(ERROR_CONFIG)
    npu.commands = 2**32 - 1
    result = npu.run([isa.ReadStatus().encode(), isa.ReadStatus().encode()])
    assert result.data_out == status_bytes(ERROR_CONFIG, commands=2**32 - 1) + status_bytes(
        ERROR_CONFIG, commands=0)


def test_state_persists_across_runs():
    config = CONFIGS[1]
    npu = GoldenNpu(config)
    gemm = random_gemm(np.random.default_rng(9), 4, config.rows, config.cols, "i8_x_i8")
    chip_pass, data_in = gemm_pass(config, gemm, raw=True)
    # One command per run(), each with only its own data.
    position = 0
    out = b""
    for word in chip_pass.commands:
        need = isa.decode(word).data_in_bytes(config)
        out += npu.run([word], data_in[position:position + need]).data_out
        position += need
    assert position == len(data_in)
    assert out[-config.beats(8) * config.data_bytes:] == status_bytes(
        config, commands=len(chip_pass.commands) - 1)
    raw = unframe(out[:-config.beats(8) * config.data_bytes], 4, 4 * config.cols,
                  config).copy().view("<i4")
    np.testing.assert_array_equal(raw, gemm.expected_acc())


def test_power_on_buffers_are_zero():
    config = ERROR_CONFIG
    result = GoldenNpu(config).run([isa.Store(count=2, n=4, raw=1).encode()])
    assert result.data_out == bytes(2 * 16)


def test_reset_clears_registers_and_keeps_buffers():
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    gemm = random_gemm(np.random.default_rng(3), 2, 4, 4, "u8_x_u8_zp")
    acc = run_gemm(npu, gemm, raw=True)
    # Parameters of scale 1/2 in both sets, then an error.
    half = isa.ParamRecord(multiplier=1 << 30, shift=31, low=-256, high=255)
    program = CommandStream(config)
    for param_set in (0, 1):
        program.add(isa.LoadParams(count=4, param_set=param_set), records_of([half] * 4, config))
    npu.run(program.commands + [9], program.data_in)
    assert npu.status().error == ErrorCode.BAD_OPCODE
    npu.reset()
    assert npu.status() == isa.StatusRecord()
    # The accumulator kept the GEMM; both parameter sets requantize with scale 1 again.
    commands = [isa.Store(count=2, n=4, raw=1).encode(), isa.Store(count=2, n=4).encode(),
                isa.Store(count=2, n=4, param_set=1).encode(), isa.ReadStatus().encode()]
    result = npu.run(commands)
    raw = unframe(result.data_out[:2 * 16], 2, 16, config).copy().view("<i4")
    np.testing.assert_array_equal(raw, acc)
    clamped = np.clip(acc, -128, 127).astype(np.int8).view(np.uint8)
    for part in (result.data_out[32:40], result.data_out[40:48]):
        np.testing.assert_array_equal(unframe(part, 2, 4, config), clamped)
    assert result.data_out[48:] == status_bytes(config, commands=3)
    # The activation and weight buffers kept their contents too: the same matmul again.
    again = npu.run([isa.Matmul(count=2, acc_addr=4).encode(),
                     isa.Store(acc_addr=4, count=2, n=4, raw=1).encode()])
    np.testing.assert_array_equal(unframe(again.data_out, 2, 16, config).copy().view("<i4"),
                                  acc)


# -- data-in underflow ----------------------------------------------------------------------

@pytest.mark.parametrize("instruction, name, needed", [
    (isa.LoadAct(count=2, length=4), "LOAD_ACT", 8),
    (isa.LoadWeight(k=3, n=2), "LOAD_WEIGHT", 12),
    (isa.LoadParams(count=2), "LOAD_PARAMS", 32),
], ids=str)
def test_data_underflow_says_what_is_missing(instruction, name, needed):
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    # A first command takes one beat, then the stream holds one beat fewer than needed.
    data = bytes(config.data_bytes) + bytes(needed - config.data_bytes)
    with pytest.raises(DataUnderflow, match=f"^{name} needs {needed} data bytes at offset "
                                            f"{config.data_bytes}, the stream has "
                                            f"{needed - config.data_bytes}$"):
        npu.run([isa.LoadAct(count=1, length=4).encode(), instruction.encode()], data)


def test_short_parameter_stream_leaves_the_waiting_chip_state():
    # Three records: a good one, an invalid one and half of a third; then commands the
    # chip consumes while it waits (NOP, a skipped STORE) and one it waits at.
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    half = isa.ParamRecord(multiplier=1 << 30, shift=31, low=-256, high=255)
    data = records_of([half, isa.ParamRecord(shift=0), half], config)[:-8]
    commands = [isa.LoadParams(count=3).encode(), isa.Nop().encode(),
                isa.Store(count=1, n=4).encode(), isa.ReadStatus().encode(),
                isa.Nop().encode()]
    with pytest.raises(DataUnderflow, match="^LOAD_PARAMS needs 48 data bytes at offset 0, "
                                            "the stream has 40$") as caught:
        npu.run(commands, data)
    assert caught.value.result.status == isa.StatusRecord(
        error=ErrorCode.BAD_PARAM, error_opcode=Opcode.LOAD_PARAMS, commands=3)
    assert caught.value.result.data_in_used == len(data)
    assert caught.value.result.data_out == b""
    assert npu.params[0]["shift"].tolist() == [31, 30, 30, 30]
    with pytest.raises(RuntimeError, match=r"^the model waits for data \(LOAD_PARAMS needs "):
        npu.run([isa.Nop().encode()])
    npu.reset()
    assert npu.run([isa.ReadStatus().encode()]).data_out == status_bytes(config)


def test_short_data_writes_the_vectors_that_arrived():
    config = ERROR_CONFIG
    npu = GoldenNpu(config)
    npu.run([isa.LoadWeight(k=4, n=4).encode()], beats_of(np.full((4, 4), 7), config))
    rows = np.arange(1, 13).reshape(3, 4)
    # Two whole weight rows and a byte of the third: rows 2 and 3 keep the old 7s.
    with pytest.raises(DataUnderflow) as caught:
        npu.run([isa.LoadWeight(k=3, n=4).encode()], beats_of(rows, config)[:9])
    assert caught.value.result.status == isa.StatusRecord(commands=2)
    np.testing.assert_array_equal(npu.weights[0], [rows[0], rows[1], [7] * 4, [7] * 4])
    npu.reset()
    with pytest.raises(DataUnderflow):
        npu.run([isa.LoadAct(addr=1, count=3, length=2).encode()],
                beats_of(rows[:, :2], config)[:8])
    np.testing.assert_array_equal(npu.act[:4], [[0] * 4, [1, 2, 0, 0], [5, 6, 0, 0], [0] * 4])


def test_config_must_be_an_npu_config():
    with pytest.raises(TypeError, match="config must be an NpuConfig"):
        GoldenNpu({"rows": 4})
