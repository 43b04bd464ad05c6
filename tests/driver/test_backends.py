"""Every backend runs the same command streams with the golden model's results.

The chip keeps its state between ``execute`` calls (buffers loaded by one call
are used by the next), cycle counts of unstalled runs equal the cycle model's,
a reset recovers a chip that waits for data or latched an error (buffers kept),
and the RTL backends write waveforms on request.
"""

import numpy as np
import pytest

from driver.backends import BackendUnavailable, available_backends, open_backend
from driver.backends.base import BACKENDS
from driver.lowering import lower_matmul
from hw import isa
from hw.beats import pack_rows
from hw.config import NpuConfig
from sim.golden import GoldenNpu
from sim.programs import CommandStream, random_params

CONFIG = NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32, data_bytes=4)


def _programs(seed):
    """Three calls: a GEMM, then a store that only works if the accumulator kept
    its rows, then a malformed command followed by a status read."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (6, 9)).astype(np.uint8)
    w = rng.integers(-128, 128, (9, 5)).astype(np.int8)
    gemm = lower_matmul(w, batch=len(a), config=CONFIG, act_signed=False,
                        records=random_params(rng, 5))
    first = CommandStream(CONFIG, instructions=list(gemm.instructions),
                          data_chunks=[gemm.data_in(a)])
    second = CommandStream(CONFIG).add(isa.Store(acc_addr=0, count=6, n=1, raw=1))
    third = CommandStream(CONFIG).add(isa.Matmul(act_addr=0, count=0, slot=0, acc_addr=0))
    third.add(isa.ReadStatus())
    return [first, second, third]


#: Backend name and options: the verilator backend runs its compiled loop by default and
#: the same model under cocotb on request.
BACKEND_CASES = {"golden": ("golden", {}), "amaranth": ("amaranth", {}),
                 "verilator": ("verilator", {}),
                 "verilator-cocotb": ("verilator", {"cocotb": True}),
                 "icarus": ("icarus", {})}


@pytest.mark.parametrize("case", list(BACKEND_CASES))
def test_backend_matches_golden_across_calls(case):
    name, options = BACKEND_CASES[case]
    programs = _programs(seed=len(case))
    model = GoldenNpu(CONFIG)
    expected = [model.run(p.commands, p.data_in) for p in programs]
    with open_backend(name, config=CONFIG, **options) as backend:
        results = [backend.execute(p.commands, p.data_in) for p in programs]
    for program, got, want in zip(programs, results, expected, strict=True):
        assert got.data_out == want.data_out, program.disassemble()
        assert got.status == want.status
        assert got.cycles == want.cycles
    assert results[-1].status.error == isa.ErrorCode.ZERO_SIZE
    assert results[-1].cycles_measured == (name != "golden")


@pytest.mark.parametrize("case", ["amaranth", "verilator", "icarus"])
def test_backend_stalls_do_not_change_results(case):
    name, options = BACKEND_CASES[case]
    programs = _programs(seed=7)
    model = GoldenNpu(CONFIG)
    expected = [model.run(p.commands, p.data_in) for p in programs]
    with open_backend(name, config=CONFIG, stall_probability=0.4, seed=3,
                      **options) as backend:
        results = [backend.execute(p.commands, p.data_in) for p in programs]
    assert [r.data_out for r in results] == [e.data_out for e in expected]
    # Stalls can only add cycles to the unstalled count.
    assert all(r.cycles >= e.cycles for r, e in zip(results, expected, strict=True))
    assert any(r.cycles > e.cycles for r, e in zip(results, expected, strict=True))


@pytest.mark.parametrize("case, magic", [("amaranth", b"$"), ("icarus", b"\x00"),
                                         ("verilator", b"\x00"), ("verilator-cocotb", b"$")])
def test_backend_writes_waveform(case, magic, tmp_path):
    name, options = BACKEND_CASES[case]
    trace = tmp_path / f"wave.{'vcd' if magic == b'$' else 'fst'}"
    program = _programs(seed=1)[0]
    with open_backend(name, config=CONFIG, trace=trace, **options) as backend:
        backend.execute(program.commands, program.data_in)
    data = trace.read_bytes()
    assert len(data) > 1000
    if magic == b"$":
        text = data.decode(errors="replace")
        assert "$enddefinitions" in text and "commands__valid" in text
    else:
        assert data[:1] == magic  # FST block type 0: header


def test_every_backend_is_available_here():
    assert set(available_backends()) == set(BACKENDS)
    missing = {name: why for name, why in available_backends().items() if why}
    assert not missing, missing


def test_verilator_cocotb_option_wrong():
    with pytest.raises(TypeError, match=r"cocotb must be a bool, not 'yes'"):
        open_backend("verilator", config=CONFIG, cocotb="yes")


def test_open_backend_name_wrong():
    with pytest.raises(ValueError, match="unknown backend 'fpga'; choose one of golden"):
        open_backend("fpga")


def test_missing_simulator_says_how_to_install(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(BackendUnavailable, match="apt-get install iverilog"):
        open_backend("icarus", config=CONFIG)
    with pytest.raises(BackendUnavailable, match="apt-get install make g\\+\\+"):
        open_backend("verilator", config=CONFIG)


def test_pack_rows_matches_data_in_bytes():
    # The data a program pushes is exactly what its instructions say they consume.
    for program in _programs(seed=2):
        assert len(program.data_in) == sum(i.data_in_bytes(CONFIG) for i in program.instructions)
    assert len(pack_rows(CONFIG, np.zeros((3, 5), np.uint8))) == 3 * 2 * CONFIG.data_bytes


def _short_params():
    """A LOAD_PARAMS whose second record is invalid and whose third never arrives whole."""
    records = [isa.ParamRecord(), isa.ParamRecord(shift=0), isa.ParamRecord()]
    data = b"".join(pack_rows(CONFIG, np.frombuffer(r.encode(), np.uint8)[None])
                    for r in records)
    return [isa.LoadParams(count=3).encode(), isa.ReadStatus().encode()], data[:-4]


@pytest.mark.parametrize("case", list(BACKEND_CASES))
def test_backend_recovers_with_a_reset(case):
    """A short stream (the chip waits: TimeoutError), then a chip error: a reset recovers
    each, the buffers kept, as the golden model's reset does."""
    name, options = BACKEND_CASES[case]
    gemm, store, malformed = _programs(seed=4)
    model = GoldenNpu(CONFIG)
    with open_backend(name, config=CONFIG, max_idle_cycles=200, **options) as backend:
        for program in (gemm, malformed):
            assert backend.execute(program.commands, program.data_in).status == \
                model.run(program.commands, program.data_in).status
        assert backend.execute([]).status.error == isa.ErrorCode.ZERO_SIZE
        backend.reset()
        model.reset()
        assert backend.execute([]).status == isa.StatusRecord()
        # A short stream: the chip waits until its watchdog, then takes nothing more.
        commands, data = _short_params()
        with pytest.raises(TimeoutError):
            backend.execute(commands, data)
        with pytest.raises(RuntimeError, match=r"made no progress in an earlier run .*: "
                                               r"reset\(\) it first$"):
            backend.execute(store.commands)
        backend.reset()
        # The accumulator kept the GEMM's rows through both resets.
        got = backend.execute(store.commands, store.data_in)
        want = model.run(store.commands, store.data_in)
        assert got.data_out == want.data_out
        assert got.status == want.status == isa.StatusRecord(commands=1)
        assert got.cycles == want.cycles
