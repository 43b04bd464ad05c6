"""The compiled Verilator harness gives the answers of the golden model, the cycle model and
the cocotb path.

* Random command mixes (every command, errors included) and driver lowerings, one chip per
  configuration kept across runs: bytes and status equal the golden model's, cycles equal
  the cycle model's when unstalled and exceed them under random stalls.  Three
  configurations cover the port types the harness copies beats into (8-, 32- and
  128-bit data streams).
* The same programs under the same deterministic pause patterns, and under the harness's
  own random pauses replayed in Python by :func:`harness_random_pauses`, count the same
  cycles on the cocotb path (the host loop in Python) as in the compiled loop.
* The watchdog, the waveform, the build cache, two configurations in one process, and bad
  arguments.
"""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from driver.lowering import lower_matmul
from hw import isa
from hw.beats import pack_rows
from hw.config import NpuConfig
from sim.compiled_harness import (
    CompiledSimulation,
    compiled_problem,
    harness_random_pauses,
    pause_threshold,
)
from sim.golden import GoldenNpu
from sim.host_loop import STREAMS
from sim.programs import CommandStream, random_params, random_program
from sim.rtl import RtlSimulation, simulator_problem

#: The configuration of the other RTL tests (one cocotb build serves all).
CONFIG = NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32, data_bytes=4)
CONFIGS = {
    "4x4": CONFIG,
    "2x3-1byte": NpuConfig(rows=2, cols=3, act_depth=48, weight_tiles=3, acc_depth=24,
                           data_bytes=1),
    "4x4-16byte": NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32,
                            data_bytes=16),
}


def _require(problem, tool):
    if problem:
        pytest.fail(f"{tool} is required for the RTL tests: {problem}")


@pytest.fixture(scope="module")
def simulations():
    """Built simulations by configuration name (each built on first use)."""
    _require(compiled_problem(), "the compiled Verilator harness")
    built = {}

    def get(name):
        if name not in built:
            built[name] = CompiledSimulation(config=CONFIGS[name]).build()
        return built[name]
    return get


def _patterns():
    """A different repeating pause pattern on each stream."""
    return {"commands_pause": itertools.cycle([True, False]),
            "data_in_pause": itertools.cycle([False, True, True]),
            "data_out_pause": itertools.cycle([True, True, False, False, False])}


def _replayed(probability, seed):
    """The harness's random pauses of ``seed`` as Python iterators, for any session."""
    return {f"{name}_pause": harness_random_pauses(probability, seed=seed, stream=index)
            for index, name in enumerate(STREAMS)}


def _gemm(config, rng, m=6, k=9, n=7):
    """A GEMM as the driver lowers it (it ends with a READ_STATUS)."""
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    chip_pass = lower_matmul(w, batch=m, config=config, act_signed=False,
                             records=random_params(rng, n))
    return SimpleNamespace(commands=chip_pass.commands, data_in=chip_pass.data_in(a),
                           label=f"gemm {m}x{k}x{n}")


def _programs(config, seed, count=4):
    """Driver lowerings and random command mixes, errors included, in one sequence."""
    rng = np.random.default_rng(seed)
    programs = [_gemm(config, rng), _gemm(config, rng, m=13, k=2 * config.rows + 1,
                                          n=config.cols + 2)]
    for index in range(count):
        program = random_program(config, rng)
        programs.append(SimpleNamespace(commands=program.commands, data_in=program.data_in,
                                        label=f"random mix {index}:\n"
                                              f"{program.disassemble()}"))
    return programs


def _same(got, want, label):
    assert got.data_out == want.data_out, label
    assert got.status == want.status, label
    assert got.array_cycles == want.array_cycles, label
    assert got.array_macs == want.array_macs, label
    assert got.data_in_used == want.data_in_used, label


# -- against the golden model and the cycle model ----------------------------------------------

@pytest.mark.parametrize("name", list(CONFIGS))
def test_programs_match_golden_and_cycle_model(name, simulations):
    config = CONFIGS[name]
    programs = _programs(config, seed=len(name))
    model = GoldenNpu(config)
    errors = 0
    with simulations(name).session() as chip:
        for program in programs:
            want = model.run(program.commands, program.data_in)
            got = chip.run(program.commands, program.data_in)
            _same(got, want, program.label)
            assert got.cycles_measured and not want.cycles_measured
            assert got.cycles == want.cycles, program.label
            errors += got.status.error != isa.ErrorCode.NONE
    # The mixes reached the error paths too.
    assert errors > 0


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_stalls_change_only_the_cycles(name, simulations):
    config = CONFIGS[name]
    programs = _programs(config, seed=10 + len(name))
    model = GoldenNpu(config)
    slower = 0
    with simulations(name).session() as chip:
        for seed, program in enumerate(programs):
            want = model.run(program.commands, program.data_in)
            got = chip.run(program.commands, program.data_in, stall_probability=0.4, seed=seed)
            _same(got, want, program.label)
            assert got.cycles >= want.cycles, program.label
            slower += got.cycles > want.cycles
    assert slower > 0


def test_state_persists_between_runs(simulations):
    # The first run leaves results in the accumulator; the second only stores them.
    rng = np.random.default_rng(3)
    gemm = _gemm(CONFIG, rng)
    store = CommandStream(CONFIG).add(isa.Store(acc_addr=0, count=6, n=1, raw=1))
    model = GoldenNpu(CONFIG)
    with simulations("4x4").session() as chip:
        for program in (gemm, store):
            want = model.run(program.commands, program.data_in)
            _same(chip.run(program.commands, program.data_in), want, "store after gemm")
    fresh = GoldenNpu(CONFIG).run(store.commands, store.data_in)
    assert fresh.data_out != want.data_out


# -- against the cocotb path -------------------------------------------------------------------

@pytest.fixture
def cocotb_session():
    """The same Verilog under cocotb, the host loop in Python."""
    _require(simulator_problem("verilator"), "verilator")
    with RtlSimulation(config=CONFIG, simulator="verilator").session() as session:
        yield session


@pytest.mark.parametrize("pauses", ["none", "patterns", "random"])
def test_same_cycles_as_the_cocotb_path(pauses, simulations, cocotb_session):
    programs = _programs(CONFIG, seed=20, count=3)
    with simulations("4x4").session() as chip:
        for seed, program in enumerate(programs):
            if pauses == "none":
                compiled = {}
                cocotb = {}
            elif pauses == "patterns":
                compiled, cocotb = _patterns(), _patterns()
            else:
                compiled = {"stall_probability": 0.3, "seed": seed}
                cocotb = _replayed(0.3, seed)
            got = chip.run(program.commands, program.data_in, **compiled)
            want = cocotb_session.run(program.commands, program.data_in, **cocotb)
            _same(got, want, program.label)
            assert got.cycles == want.cycles, program.label


def test_harness_random_pauses_are_seeded_and_replayable(simulations):
    program = _gemm(CONFIG, np.random.default_rng(5))
    with simulations("4x4").session() as chip:
        runs = [chip.run(program.commands, program.data_in, stall_probability=0.35, seed=seed)
                for seed in (1, 1, 2, 3, 4, 5)]
        replayed = chip.run(program.commands, program.data_in, **_replayed(0.35, 1))
    assert runs[0].cycles == runs[1].cycles == replayed.cycles
    # Other seeds stall other cycles.
    assert len({run.cycles for run in runs[1:]}) > 1
    draws = list(itertools.islice(harness_random_pauses(0.35, seed=1, stream=0), 4000))
    assert 0.32 < sum(draws) / len(draws) < 0.38
    other = list(itertools.islice(harness_random_pauses(0.35, seed=1, stream=1), 4000))
    assert draws != other
    assert pause_threshold(0.5) == 1 << 63


# -- the watchdog, the waveform, the build ----------------------------------------------------

WATCHDOG = (r"no progress for 31 cycles: 1 of 1 commands taken, 1 of 1 data-in beats taken, "
            r"0 data-out beats received")


def test_watchdog_names_the_progress(simulations):
    # A LOAD_ACT of two rows with the data for one: the chip waits for ever.
    commands = [isa.LoadAct(addr=0, count=2, length=CONFIG.rows).encode()]
    data_in = pack_rows(CONFIG, np.ones((1, CONFIG.rows), np.uint8))
    with simulations("4x4").session() as chip:
        with pytest.raises(TimeoutError, match=WATCHDOG):
            chip.run(commands, data_in, stall_probability=0.3, max_idle_cycles=30)


def test_trace_writes_fst(tmp_path):
    _require(compiled_problem(), "the compiled Verilator harness")
    path = tmp_path / "wave.fst"
    program = _gemm(CONFIG, np.random.default_rng(1))
    simulation = CompiledSimulation(config=CONFIG, trace=True)
    with simulation.session(trace_path=path) as chip:
        result = chip.run(program.commands, program.data_in)
    assert result.data_out == GoldenNpu(CONFIG).run(program.commands, program.data_in).data_out
    data = path.read_bytes()
    assert len(data) > 1000 and data[:1] == b"\x00"  # FST block type 0: header
    with pytest.raises(ValueError, match=r"trace_path needs a CompiledSimulation built with "
                                         r"trace=True"):
        CompiledSimulation(config=CONFIG).session(trace_path=path)


def test_build_is_cached_by_configuration(simulations):
    first = simulations("4x4")
    again = CompiledSimulation(config=CONFIG).build()
    assert again.library_path == first.library_path
    stamp = first.library_path.stat().st_mtime_ns
    assert CompiledSimulation(config=CONFIG).build().library_path.stat().st_mtime_ns == stamp
    other = simulations("2x3-1byte")
    assert other.build_dir != first.build_dir


def test_two_configurations_in_one_process(simulations):
    # Each library keeps its symbols to itself: both chips answer for their own config.
    narrow, wide = CONFIGS["2x3-1byte"], CONFIGS["4x4-16byte"]
    models = {narrow: GoldenNpu(narrow), wide: GoldenNpu(wide)}
    with simulations("2x3-1byte").session() as a, simulations("4x4-16byte").session() as b:
        for config, chip in ((narrow, a), (wide, b), (narrow, a)):
            program = _gemm(config, np.random.default_rng(config.data_bytes))
            _same(chip.run(program.commands, program.data_in),
                  models[config].run(program.commands, program.data_in), str(config))


# -- bad arguments -----------------------------------------------------------------------------

def test_run_arguments_wrong(simulations):
    with simulations("4x4").session() as chip:
        nop = [isa.Nop().encode()]
        with pytest.raises(ValueError, match=r"data must be whole 4-byte beats, not 3 bytes"):
            chip.run(nop, b"abc")
        with pytest.raises(TypeError, match=r"commands_pause must be an iterable of booleans, "
                                            r"not 0\.5"):
            chip.run(nop, commands_pause=0.5)
        with pytest.raises(ValueError, match=r"stall_probability must be at least 0"):
            chip.run(nop, stall_probability=-1)
        with pytest.raises(ValueError, match=r"max_idle_cycles must be a positive integer, "
                                             r"not 0"):
            chip.run(nop, max_idle_cycles=0)
        # The session still serves runs after refusing them.
        assert chip.run(nop).status.commands == 1
    with pytest.raises(RuntimeError, match=r"the compiled session is closed"):
        chip.run(nop)


def test_harness_random_pauses_wrong():
    with pytest.raises(ValueError, match=r"stream must be 0, 1 or 2, not 3"):
        harness_random_pauses(0.5, seed=0, stream=3)
    with pytest.raises(ValueError, match=r"stall_probability must be at least 0 and below 1"):
        harness_random_pauses(1.0, seed=0, stream=0)
    with pytest.raises(TypeError, match=r"seed must be an int, not 'x'"):
        harness_random_pauses(0.5, seed="x", stream=0)


@pytest.mark.parametrize("m, k, n", [(64, 64, 64), (128, 128, 128), (512, 64, 64),
                                     (200, 520, 24)], ids=str)
def test_bench_layers_match_golden_and_cycle_model(m, k, n):
    # Bench layers on the default 8x8 chip in the driver's schedules (the blocked one for
    # all four): the Verilog counts the cycle model's cycles and sends the golden bytes.
    _require(compiled_problem(), "the compiled Verilator harness")
    config = NpuConfig()
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    w = rng.integers(-128, 128, (k, n)).astype(np.int8)
    chip_pass = lower_matmul(w, batch=m, config=config, act_signed=False,
                             records=random_params(rng, n))
    assert chip_pass.plan.n_group is not None
    data_in = chip_pass.data_in(a)
    want = GoldenNpu(config).run(chip_pass.commands, data_in)
    with CompiledSimulation(config=config).build().session() as chip:
        got = chip.run(chip_pass.commands, data_in)
    _same(got, want, f"{m}x{k}x{n}")
    assert got.cycles == want.cycles
