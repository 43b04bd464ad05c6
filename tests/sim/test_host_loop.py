"""The host loop: its contract cycle for cycle, and on the real chip in Amaranth and cocotb.

* Against a scripted chip: offers follow the pause values cycle for cycle, an offer
  stays up until taken, the run ends on the completion condition only.
* On the Npu in Amaranth's simulator and on Verilator (through :class:`sim.rtl.RtlSession`,
  whose pause values cross to the cocotb process): a deterministic pause pattern on each
  stream gives the golden model's bytes, status and array cycles; both simulators, driven
  by the same loop with the same pauses, count the same cycles; a chip that cannot finish
  trips the watchdog, whose TimeoutError names the progress and carries what came
  out before it (the golden model's result at the same wait).
* Bad stall arguments raise with matched messages.
"""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from driver.lowering import lower_matmul
from hw import isa
from hw.beats import pack_rows
from hw.config import NpuConfig
from sim.amaranth_runner import AmaranthSession
from sim.golden import DataUnderflow, GoldenNpu
from sim.host_loop import HostLoop, RunTimeout, random_pauses, stream_pauses
from sim.programs import random_params
from sim.rtl import RtlSimulation, simulator_problem

CONFIG = NpuConfig(rows=4, cols=4, act_depth=64, weight_tiles=2, acc_depth=32, data_bytes=4)


def _patterns():
    """A different repeating pause pattern on each stream."""
    return {"commands_pause": itertools.cycle([True, False]),
            "data_in_pause": itertools.cycle([False, True, True]),
            "data_out_pause": itertools.cycle([True, True, False, False, False])}


def _gemm(seed):
    """A 6x9x7 GEMM as the driver lowers it (it ends with a READ_STATUS)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (6, 9)).astype(np.uint8)
    w = rng.integers(-128, 128, (9, 7)).astype(np.int8)
    chip_pass = lower_matmul(w, batch=6, config=CONFIG, act_signed=False,
                             records=random_params(rng, 7))
    return SimpleNamespace(commands=chip_pass.commands, data_in=chip_pass.data_in(a))


def _starved_load():
    """A LOAD_ACT of two rows with the data for one: the chip waits for ever."""
    return [isa.LoadAct(addr=0, count=2, length=CONFIG.rows).encode()], \
        pack_rows(CONFIG, np.ones((1, CONFIG.rows), np.uint8))


@pytest.fixture
def verilator_session():
    """A freshly reset chip on Verilator, as the golden model each test compares with."""
    problem = simulator_problem("verilator")
    if problem:
        pytest.fail(f"verilator is required for the RTL tests: {problem}")
    with RtlSimulation(config=CONFIG, simulator="verilator").session() as session:
        yield session


# -- the loop against a scripted chip ----------------------------------------------------------

def _run_scripted(loop, ready, *, cycles):
    """Step ``loop`` with a chip whose input readies follow ``ready(cycle)`` and which never
    sends or finishes; returns the commands_valid it drove each cycle."""
    driven = []
    for cycle in range(cycles):
        driven.append(loop.commands_valid)
        loop.step(ready(cycle), 1, 0, None, None, None)
    return driven


def test_offers_follow_the_pause_values_cycle_for_cycle():
    pattern = [True, False, False, True, True, False]
    loop = HostLoop(commands=range(100), data_in=[], executed=0,
                    pauses=(iter(pattern * 3), None, None))
    driven = _run_scripted(loop, lambda cycle: 1, cycles=len(pattern) * 3 + 4)
    # An always-ready chip takes every offer at once: valid is exactly "not paused",
    # and once the pattern is exhausted nothing pauses.
    assert driven == [int(not p) for p in pattern * 3] + [1, 1, 1, 1]
    assert loop.commands_taken == sum(driven)


def test_an_offer_stays_up_until_taken():
    loop = HostLoop(commands=[5, 6, 7], data_in=[], executed=0,
                    pauses=(itertools.cycle([False, True]), None, None))
    driven = _run_scripted(loop, lambda cycle: int(cycle in (3, 4)), cycles=7)
    # 5 is offered in cycle 0 and held through the pause of cycles 1 and 3 until taken
    # at the edge ending cycle 3; 6 follows at once (cycle 4 has no pause) and is taken;
    # cycle 5 pauses, cycle 6 offers 7.
    assert driven == [1, 1, 1, 1, 1, 0, 1]
    assert loop.commands_taken == 2 and loop.commands_payload == 7


def test_completion_needs_every_condition():
    loop = HostLoop(commands=[7], data_in=[], executed=10)
    assert not loop.step(1, None, 0, None, None, None)          # the command is taken
    assert loop.needs_status
    assert not loop.step(None, None, 0, None, 10, 0)            # not executed yet
    assert not loop.step(None, None, 0, None, 11, 1)            # still busy
    assert not loop.step(None, None, 1, 0xAB, 11, 0)            # still sending
    assert loop.step(None, None, 0, None, 11, 0)
    assert loop.data_out == [0xAB]
    assert (loop.commands_valid, loop.data_in_valid, loop.data_out_ready) == (0, 0, 0)


# -- on the chip ------------------------------------------------------------------------------

def _check_against_golden(run, program):
    expected = GoldenNpu(CONFIG).run(program.commands, program.data_in)
    assert run.data_out == expected.data_out
    assert run.status == expected.status
    assert run.array_cycles == expected.array_cycles
    assert run.array_macs == expected.array_macs
    assert run.data_in_used == expected.data_in_used
    assert run.cycles_measured and not expected.cycles_measured
    # The patterns pause every stream, so the run takes longer than an unstalled one.
    assert run.cycles > expected.cycles
    return run


def test_pause_patterns_match_golden_in_amaranth():
    program = _gemm(seed=1)
    with AmaranthSession(config=CONFIG) as chip:
        _check_against_golden(chip.run(program.commands, program.data_in, **_patterns()),
                              program)


def test_pause_patterns_match_golden_on_verilator(verilator_session):
    program = _gemm(seed=1)
    _check_against_golden(verilator_session.run(program.commands, program.data_in,
                                                **_patterns()), program)


@pytest.mark.parametrize("pauses", [{"stall_probability": 0.3, "seed": 5}, None],
                         ids=["random", "patterns"])
def test_both_simulators_count_the_same_cycles(pauses, verilator_session):
    # The same loop with the same pauses drives the same RTL: the chip's cycle counter
    # must agree to the cycle, though one simulator is Amaranth and one Verilator.
    program = _gemm(seed=2)
    options = pauses or _patterns()
    with AmaranthSession(config=CONFIG) as chip:
        amaranth = chip.run(program.commands, program.data_in, **options)
    options = pauses or _patterns()
    verilator = verilator_session.run(program.commands, program.data_in, **options)
    assert amaranth.data_out == verilator.data_out
    assert amaranth.cycles == verilator.cycles
    assert amaranth.cycles > GoldenNpu(CONFIG).run(program.commands, program.data_in).cycles


def test_pauses_before_the_first_command_cost_no_chip_cycles():
    # The chip counts cycles from its first command: a finite pause prefix on the
    # command stream (then no pauses) leaves the count at the unstalled one.
    program = _gemm(seed=3)
    with AmaranthSession(config=CONFIG) as chip:
        run = chip.run(program.commands, program.data_in, commands_pause=[True] * 40)
    assert run.cycles == GoldenNpu(CONFIG).run(program.commands, program.data_in).cycles


WATCHDOG = (r"no progress for 31 cycles: 1 of 1 commands taken, 1 of 1 data-in beats taken, "
            r"0 data-out beats received")


def test_watchdog_names_the_progress_in_amaranth():
    commands, data_in = _starved_load()
    with AmaranthSession(config=CONFIG) as chip:
        with pytest.raises(TimeoutError, match=WATCHDOG):
            chip.run(commands, data_in, stall_probability=0.3, max_idle_cycles=30)


def test_watchdog_names_the_progress_on_verilator():
    problem = simulator_problem("verilator")
    if problem:
        pytest.fail(f"verilator is required for the RTL tests: {problem}")
    commands, data_in = _starved_load()
    # A session of its own: the chip stays stuck waiting for the missing row.
    with RtlSimulation(config=CONFIG, simulator="verilator").session() as session:
        with pytest.raises(TimeoutError, match=WATCHDOG):
            session.run(commands, data_in, stall_probability=0.3, max_idle_cycles=30)


def _stored_then_starved():
    """A GEMM whose results come out, then a load that waits for ever; and what the golden
    model says the waiting chip has produced by then."""
    gemm = _gemm(seed=4)
    starved_commands, starved_data = _starved_load()
    commands = [*gemm.commands[:-1], *starved_commands]   # no closing READ_STATUS
    data_in = gemm.data_in + starved_data
    with pytest.raises(DataUnderflow) as underflow:
        GoldenNpu(CONFIG).run(commands, data_in)
    assert underflow.value.result.data_out, "the GEMM's results come out before the wait"
    return commands, data_in, underflow.value.result


def test_timeout_keeps_what_came_out_in_amaranth():
    commands, data_in, want = _stored_then_starved()
    with AmaranthSession(config=CONFIG) as chip:
        with pytest.raises(RunTimeout) as timeout:
            chip.run(commands, data_in, stall_probability=0.3, seed=4, max_idle_cycles=60)
    got = timeout.value.result
    assert (got.data_out, got.status, got.data_in_used) == \
        (want.data_out, want.status, want.data_in_used)


def test_timeout_keeps_what_came_out_through_cocotb(verilator_session):
    # The cocotb process hands the partial result back with the timeout.
    commands, data_in, want = _stored_then_starved()
    with pytest.raises(RunTimeout) as timeout:
        verilator_session.run(commands, data_in, stall_probability=0.3, seed=4,
                              max_idle_cycles=60)
    got = timeout.value.result
    assert (got.data_out, got.status, got.data_in_used) == \
        (want.data_out, want.status, want.data_in_used)


# -- bad arguments ----------------------------------------------------------------------------

def test_stall_probability_wrong():
    with pytest.raises(ValueError, match=r"stall_probability must be at least 0 and below 1, "
                                         r"not -0\.1"):
        stream_pauses(stall_probability=-0.1)
    with pytest.raises(ValueError, match=r"stall_probability must be at least 0 and below 1, "
                                         r"not 1\.0"):
        stream_pauses(stall_probability=1.0)
    with pytest.raises(TypeError, match=r"stall_probability must be a number, not '0\.3'"):
        stream_pauses(stall_probability="0.3")
    with AmaranthSession(config=CONFIG) as chip:
        with pytest.raises(ValueError, match=r"stall_probability must be at least 0"):
            chip.run([isa.Nop().encode()], stall_probability=-0.5)
        # The session still serves runs after refusing one.
        assert chip.run([isa.Nop().encode()]).status.commands == 1


def test_pause_generator_wrong():
    with pytest.raises(TypeError, match=r"commands_pause must be an iterable of booleans, "
                                        r"not 5"):
        stream_pauses(commands_pause=5)
    with pytest.raises(TypeError, match=r"data_out_pause must be an iterable of booleans, "
                                        r"not <object object"):
        stream_pauses(data_out_pause=object())
    with AmaranthSession(config=CONFIG) as chip:
        with pytest.raises(TypeError, match=r"data_in_pause must be an iterable of booleans, "
                                            r"not True"):
            chip.run([isa.Nop().encode()], data_in_pause=True)
        assert chip.run([isa.Nop().encode()]).status.commands == 1


def test_pause_generator_wrong_on_verilator(verilator_session):
    with pytest.raises(TypeError, match=r"commands_pause must be an iterable of booleans, "
                                        r"not 0\.5"):
        verilator_session.run([isa.Nop().encode()], commands_pause=0.5)
    with pytest.raises(ValueError, match=r"stall_probability must be at least 0"):
        verilator_session.run([isa.Nop().encode()], stall_probability=-1)


def test_random_pauses_wrong():
    with pytest.raises(ValueError, match=r"probability must be at least 0 and below 1, not 2"):
        random_pauses(2)
    with pytest.raises(TypeError, match=r"seed must be an int or a str, not 1\.5"):
        random_pauses(0.5, seed=1.5)
    with pytest.raises(TypeError, match=r"seed must be an int, not None"):
        stream_pauses(stall_probability=0.5, seed=None)


def test_host_loop_arguments_wrong():
    with pytest.raises(ValueError, match=r"max_idle_cycles must be a positive integer, not 0"):
        HostLoop(commands=[], data_in=[], executed=0, max_idle_cycles=0)
    with pytest.raises(ValueError, match=r"pauses must hold 3 iterators or None, not 2"):
        HostLoop(commands=[], data_in=[], executed=0, pauses=(None, None))


def test_random_pauses_are_seeded():
    first = list(itertools.islice(random_pauses(0.4, seed=3), 200))
    assert first == list(itertools.islice(random_pauses(0.4, seed=3), 200))
    assert first != list(itertools.islice(random_pauses(0.4, seed=4), 200))
    assert 40 < sum(first) < 120


def test_data_in_wrong(verilator_session):
    with AmaranthSession(config=CONFIG) as chip:
        with pytest.raises(ValueError, match=r"data must be whole 4-byte beats, not 3 bytes"):
            chip.run([isa.Nop().encode()], b"abc")
        assert chip.run([isa.Nop().encode()]).status.commands == 1
    with pytest.raises(ValueError, match=r"data must be whole 4-byte beats, not 3 bytes"):
        verilator_session.run([isa.Nop().encode()], b"abc")
    # The session still serves runs after refusing one.
    assert verilator_session.run([isa.Nop().encode()]).status.commands == 1
