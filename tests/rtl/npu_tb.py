"""cocotb testbench of the Npu's generated Verilog, checked word for word against the golden model.

Run from pytest by ``tests/rtl/test_npu_rtl.py`` on Verilator and Icarus.  The
configuration comes from the runner (``NPU_CONFIG``) and the stream widths are
read from the DUT.  Every test drives both input streams with random idle cycles
and the output stream with random backpressure; the golden model is the
reference model and the checker compares every output byte and the status.
"""

import dataclasses
import os

import cocotb
import numpy as np
from directed_commands import directed_commands

from driver.lowering import lower_matmul
from hw import isa
from hw.beats import pack_rows
from hw.isa import ErrorCode, Opcode
from sim.cocotb_harness import NpuHarness
from sim.golden import GoldenNpu
from sim.programs import CommandStream, random_params

STALLS = float(os.environ.get("NPU_TEST_STALLS", "0.3"))


class Checker:
    """Runs each program on the DUT and the golden model and compares the results."""

    def __init__(self, dut):
        self.harness = NpuHarness(dut)
        self.config = self.harness.config
        self.model = GoldenNpu(self.config)
        self.runs = 0

    async def start(self):
        await self.harness.reset()

    async def check(self, commands, data_in=b"", label=""):
        expected = self.model.run(commands, data_in)
        self.runs += 1
        got = (await self.harness.run(commands, data_in, stall_probability=STALLS,
                                      seed=self.runs)).data_out
        if got != expected.data_out:
            first = next((i for i, (a, b) in enumerate(zip(got, expected.data_out, strict=False))
                          if a != b), min(len(got), len(expected.data_out)))
            raise AssertionError(f"{label}: data-out differs from the golden model "
                                 f"({len(got)} vs {len(expected.data_out)} bytes; first "
                                 f"difference at byte {first})")
        status = self.harness.status()
        assert status == expected.status, f"{label}: status {status} != golden {expected.status}"
        return got


def _shapes(config, rng):
    """GEMM shapes: 1x1x1, smaller than the array, one full tile, several K and N tiles."""
    r, c = config.rows, config.cols
    shapes = [(1, 1, 1), (2, max(1, r - 1), max(1, c - 1)), (r, r, c), (5, 3 * r + 1, 2 * c + 1),
              (3, 2 * r, c)]
    for _ in range(10):
        shapes.append((int(rng.integers(1, 40)), int(rng.integers(1, 4 * r + 2)),
                       int(rng.integers(1, 3 * c + 2))))
    return shapes


@cocotb.test()
async def random_gemms(dut):
    """Random GEMMs over all data types and output modes, per-column requantization, as
    the driver lowers them."""
    check = Checker(dut)
    await check.start()
    rng = np.random.default_rng(int(os.environ.get("COCOTB_RANDOM_SEED", "1") or 1))
    for index, (m, k, n) in enumerate(_shapes(check.config, rng)):
        act_signed, weight_signed, out_signed = (bool(b) for b in rng.integers(0, 2, 3))
        a = rng.integers(-128, 128, (m, k)) if act_signed else rng.integers(0, 256, (m, k))
        w = rng.integers(-128, 128, (k, n)) if weight_signed else rng.integers(0, 256, (k, n))
        params = random_params(rng, n, output_signed=out_signed)
        if not weight_signed:
            # uint8 weights carry per-column zero points, which the chip subtracts as it loads.
            params = [dataclasses.replace(p, weight_zero=int(rng.integers(0, 256)))
                      for p in params]
        raw = index % 3 == 2
        chip_pass = lower_matmul(w.astype(np.int8 if weight_signed else np.uint8), batch=m,
                                 config=check.config, act_signed=act_signed, records=params,
                                 raw=raw, output_signed=out_signed)
        data_in = chip_pass.data_in(a.astype(np.int8 if act_signed else np.uint8))
        out = await check.check(chip_pass.commands, data_in,
                                label=f"GEMM {m}x{k}x{n} raw={raw}")
        assert len(out) == chip_pass.data_out_bytes
        if raw:
            zero = np.array([p.weight_zero for p in params])
            assert np.array_equal(chip_pass.decode(out), a @ (w - zero))


@cocotb.test()
async def accumulator_buffer_limits(dut):
    """A pass as deep as the activation and accumulator buffers allow."""
    check = Checker(dut)
    await check.start()
    c = check.config
    rng = np.random.default_rng(7)
    m = min(c.act_depth // 2, c.acc_depth, 64)
    a = rng.integers(0, 256, (m, 2 * c.rows)).astype(np.uint8)
    w = rng.integers(-128, 128, (2 * c.rows, c.cols)).astype(np.int8)
    chip_pass = lower_matmul(w, batch=m, config=c, act_signed=False)
    assert len(chip_pass.blocks) == 1
    out = await check.check(chip_pass.commands, chip_pass.data_in(a), label="deep pass")
    assert np.array_equal(chip_pass.decode(out), a.astype(np.int64) @ w)


@cocotb.test()
async def malformed_commands_set_sticky_errors(dut):
    """Each malformed command class latches its code, is consumed, and corrupts nothing.

    Buffers are loaded first; after each malformed command, more commands (which
    must be skipped and take no data) and a READ_STATUS follow; CLEAR_ERROR then
    recovers, and a matmul over the original buffers must give the original result.
    """
    check = Checker(dut)
    await check.start()
    c = check.config
    rng = np.random.default_rng(3)
    m, k, n = 3, c.rows, c.cols
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    setup = CommandStream(c)
    setup.add(isa.LoadAct(addr=0, count=m, length=k), pack_rows(c, a))
    setup.add(isa.LoadWeight(slot=0, k=k, n=n, signed=1), pack_rows(c, w))
    await check.check(setup.commands, setup.data_in, label="setup")

    compute = [isa.Matmul(act_addr=0, count=m, slot=0, acc_addr=0).encode(),
               isa.Store(acc_addr=0, count=m, n=n, raw=1).encode()]
    reference = await check.check(compute, label="reference result")
    assert np.array_equal(np.frombuffer(reference, "<i4").reshape(m, -1)[:, :n],
                          a.astype(np.int64) @ w.astype(np.int64))

    for word, code in [(w, e) for w, e in directed_commands(c) if e != ErrorCode.NONE]:
        skipped = [isa.LoadAct(addr=0, count=m, length=k).encode(),   # would overwrite A
                   isa.Matmul(act_addr=0, count=m, slot=0, acc_addr=0, accumulate=1).encode(),
                   isa.Store(acc_addr=0, count=1, n=1).encode()]
        out = await check.check([word] + skipped + [isa.ReadStatus().encode()],
                                label=f"{code.name} command {word:#x}")
        record = isa.StatusRecord.decode(out)
        assert record.error == code, f"{word:#x}: status record says {record.error}, not {code}"
        assert record.error_opcode == word & 0xF
        assert int(dut.error.value) == code
        await check.check([isa.ClearError().encode(), isa.ReadStatus().encode()],
                          label="clear")
        assert int(dut.error.value) == ErrorCode.NONE
        again = await check.check(compute, label=f"result after {code.name}")
        assert again == reference, f"buffers changed after {code.name}"


@cocotb.test()
async def invalid_requantization_records(dut):
    """A record with shift 0 raises BAD_PARAM; it and later records are not written."""
    check = Checker(dut)
    await check.start()
    c = check.config
    n = c.cols
    good = [isa.ParamRecord(multiplier=(1 << 30) + i, shift=31, output_zero=i % 7)
            for i in range(n)]
    program = CommandStream(c)
    program.add(isa.LoadParams(count=n),
                b"".join(pack_rows(c, np.frombuffer(p.encode(), np.uint8)[None]) for p in good))
    await check.check(program.commands, program.data_in, label="good records")
    for bad_field in ({"shift": 0}, {"shift": 0, "rounding": 3, "bias": -1}):
        records = [p.encode() for p in good]
        raw = bytearray(records[n // 2])
        fields = isa._unpack(isa.PARAM_FIELDS, int.from_bytes(raw, "little"))
        fields.update(bad_field)
        records[n // 2] = isa._pack(isa.PARAM_FIELDS, fields, "record").to_bytes(16, "little")
        program = CommandStream(c)
        program.add(isa.LoadParams(count=n),
                    b"".join(pack_rows(c, np.frombuffer(r, np.uint8)[None]) for r in records))
        program.add(isa.ReadStatus())
        out = await check.check(program.commands, program.data_in, label=f"bad {bad_field}")
        assert isa.StatusRecord.decode(out).error == ErrorCode.BAD_PARAM
        assert isa.StatusRecord.decode(out).error_opcode == Opcode.LOAD_PARAMS
        await check.check([isa.ClearError().encode()], label="clear")
