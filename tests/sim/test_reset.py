"""The reset and the two contract gaps, on the compiled Verilator chip against the golden model.

* Reserved bits of requantization records raise ``BAD_PARAM`` as shift 0 does, on the chip
  and in the model alike (hand-written records, ``tests/directed_commands.py``).
* A data-in stream that ends inside a command: the chip waits (its watchdog trips) in
  the state the model reports with :class:`~sim.golden.DataUnderflow`, and after a reset
  both hold the same buffers (hand-written streams).
* A reset between runs clears the registers and keeps the buffers; a reset at a chosen
  cycle of a run leaves the bytes sent before it and the reset state.

Every run after a reset is checked with a probe that shows every buffer, both parameter
sets and the status, byte for byte and cycle for cycle.
"""

import numpy as np
import pytest
from directed_commands import directed_records, directed_short_streams

from driver.lowering import lower_matmul
from hw import isa
from hw.beats import pack_rows
from hw.config import NpuConfig
from hw.isa import ErrorCode
from sim.golden import DataUnderflow, GoldenNpu
from sim.host_loop import RunTimeout
from sim.programs import random_params

CONFIG = NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32, data_bytes=4)


def _probe(config):
    """Commands that send every accumulator row, every activation row through every
    weight slot, both parameter sets' requantization and the status."""
    c = config
    rows = min(c.act_depth, c.acc_depth)
    commands = [isa.Store(acc_addr=0, count=c.acc_depth, n=c.cols, raw=1)]
    for slot in range(c.weight_tiles):
        for act in range(0, c.act_depth, rows):
            count = min(rows, c.act_depth - act)
            commands += [isa.Matmul(act_addr=act, count=count, slot=slot, acc_addr=0),
                         isa.Store(acc_addr=0, count=count, n=c.cols, raw=1)]
    commands += [isa.Store(acc_addr=0, count=rows, n=c.cols, param_set=s) for s in (0, 1)]
    return [ins.encode() for ins in commands + [isa.ReadStatus()]]


def _same_state(chip, model, label):
    probe = _probe(model.config)
    want = model.run(probe)
    got = chip.run(probe, stall_probability=0.3, seed=len(label))
    assert got.data_out == want.data_out, label
    assert got.status == want.status, label
    unstalled = chip.run(probe)
    assert unstalled.cycles == model.run(probe).cycles, label


def _gemm(rng, config):
    a = rng.integers(0, 256, (7, 2 * config.rows + 1)).astype(np.uint8)
    w = rng.integers(-128, 128, (2 * config.rows + 1, config.cols + 1)).astype(np.int8)
    chip_pass = lower_matmul(w, batch=len(a), config=config, act_signed=False,
                             records=random_params(rng, config.cols + 1))
    return chip_pass.commands, chip_pass.data_in(a)


def _records(config, records):
    return b"".join(pack_rows(config, np.frombuffer(r, np.uint8)[None]) for r in records)


@pytest.mark.parametrize("index", range(len(directed_records())))
def test_directed_records_raise_the_same_code_on_chip_and_model(index, simulation):
    record, code = directed_records()[index]
    data = _records(CONFIG, [record, record])
    commands = [isa.LoadParams(count=2, param_set=1).encode(), isa.ReadStatus().encode()]
    model = GoldenNpu(CONFIG)
    want = model.run(commands, data)
    with simulation.session() as chip:
        got = chip.run(commands, data, stall_probability=0.3, seed=index)
        assert got.status.error == want.status.error == code
        assert got.data_out == want.data_out
        assert got.data_in_used == want.data_in_used == len(data)
        # A bad record writes nothing: parameter set 1 requantizes as before.
        _same_state(chip, model, f"record {index}")


def _short_stream(config, rng, commands, blocks, cut):
    data = b""
    for block in blocks:
        if isinstance(block, list):
            data += _records(config, block)
        else:
            count, length = block
            data += pack_rows(config, rng.integers(0, 256, (count, length)))
    return [ins.encode() for ins in commands], data[:len(data) - cut * config.data_bytes]


@pytest.mark.parametrize("index", range(len(directed_short_streams(CONFIG))))
def test_short_stream_leaves_the_same_state_on_chip_and_model(index, simulation):
    label, commands, blocks, cut, status = directed_short_streams(CONFIG)[index]
    rng = np.random.default_rng(index)
    model = GoldenNpu(CONFIG)
    with simulation.session() as chip:
        # Buffers full of something first, so that what the short command wrote shows.
        gemm = _gemm(rng, CONFIG)
        assert chip.run(*gemm).data_out == model.run(*gemm).data_out
        chip.reset()
        model.reset()
        words, data = _short_stream(CONFIG, rng, commands, blocks, cut)
        with pytest.raises(DataUnderflow) as underflow:
            model.run(words, data)
        with pytest.raises(RunTimeout, match="no progress for 301 cycles") as timeout:
            chip.run(words, data, stall_probability=0.3, seed=index, max_idle_cycles=300)
        want, got = underflow.value.result, timeout.value.result
        assert want.status == got.status == status, label
        assert got.data_out == want.data_out, label
        assert got.data_in_used == want.data_in_used == len(data), label
        chip.reset()
        model.reset()
        _same_state(chip, model, label)


def test_reset_between_runs_clears_registers_and_keeps_buffers(simulation):
    rng = np.random.default_rng(1)
    model = GoldenNpu(CONFIG)
    with simulation.session() as chip:
        gemm = _gemm(rng, CONFIG)
        # The GEMM loads both parameter sets; a bad opcode latches an error.
        for commands, data in (gemm, ([0x9], b"")):
            assert chip.run(commands, data).status == model.run(commands, data).status
        assert chip.run([]).status.error == ErrorCode.BAD_OPCODE
        chip.reset()
        model.reset()
        assert chip.run([]).status == isa.StatusRecord()
        _same_state(chip, model, "after a reset")
    # The kept accumulator differs from a fresh chip's.
    fresh = GoldenNpu(CONFIG).run(_probe(CONFIG))
    assert fresh.data_out != model.run(_probe(CONFIG)).data_out


@pytest.mark.parametrize("reset_after", [1, 7, 30, 95, 160])
def test_reset_at_a_cycle_of_a_run(reset_after, simulation):
    rng = np.random.default_rng(reset_after)
    model = GoldenNpu(CONFIG)
    with simulation.session() as chip:
        commands, data = _gemm(rng, CONFIG)
        full = model.run(commands, data)
        assert full.cycles > reset_after
        got = chip.run(commands, data, reset_after=reset_after)
        assert got.reset
        assert got.status == isa.StatusRecord()
        assert full.data_out.startswith(got.data_out)
        # Every buffer written again, the chip and the model agree.
        model.reset()
        rewrite = [isa.LoadAct(addr=0, count=CONFIG.act_depth, length=CONFIG.rows)]
        rewrite += [isa.LoadWeight(slot=s, k=CONFIG.rows, n=CONFIG.cols)
                    for s in range(CONFIG.weight_tiles)]
        rewrite += [isa.Matmul(count=CONFIG.acc_depth)]
        data = pack_rows(CONFIG, rng.integers(0, 256, (CONFIG.act_depth, CONFIG.rows)))
        data += pack_rows(CONFIG, rng.integers(0, 256, (CONFIG.weight_tiles * CONFIG.rows,
                                                         CONFIG.cols)))
        words = [ins.encode() for ins in rewrite]
        assert chip.run(words, data).status == model.run(words, data).status
        _same_state(chip, model, f"reset after {reset_after} cycles")
    # A run that ends before its reset cycle is not reset.
    with simulation.session() as chip:
        result = chip.run([isa.Nop().encode()], reset_after=1000)
        assert not result.reset and result.status.commands == 1


def test_reset_arguments_wrong(simulation):
    with simulation.session() as chip:
        for value in (0, -1, True, 1.5):
            with pytest.raises(ValueError, match=r"^reset_after must be a positive integer "
                                                 r"or None, not "):
                chip.run([isa.Nop().encode()], reset_after=value)
    with pytest.raises(RuntimeError, match="the compiled session is closed"):
        chip.reset()
