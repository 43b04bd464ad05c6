"""The fuzzer of :mod:`sim.fuzz`: a short campaign finds nothing, a planted bug is found and
shrunk, its commands come from the rules.

The long campaign is ``make fuzz SEED=... BUDGET=...``.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from hw import isa
from hw.beats import row_stride
from hw.config import PARAM_RECORD_BYTES, NpuConfig
from hw.isa import ErrorCode
from sim import fuzz
from sim.golden import GoldenNpu, check_command, unpack_param_records

CONFIG = fuzz.CONFIGS["4x4"]
#: Seconds of the campaign in ``make test``.
BUDGET = 60


def test_short_campaign_finds_nothing(simulation):
    report = fuzz.Fuzzer(simulation, seed=2026, resync=10, reset_probability=0.1).run(BUDGET)
    assert report.failures == []
    assert report.mismatches == report.hangs == report.cycle_differences == 0
    # It reached every kind of run.
    assert report.streams > 50 and report.commands > 1000
    assert report.resets > 0 and report.reset_runs > 0
    assert report.short > 0 and report.long > 0
    assert "mismatches 0, hangs 0, cycle-model differences 0" in report.summary()


def test_planted_bug_is_found_and_shrunk(simulation, monkeypatch):
    # The model forgets to clear errors: any error, then CLEAR_ERROR, differs in status.
    monkeypatch.setattr(GoldenNpu, "_exec_clear_error", lambda self, ins: None)
    found = []
    fuzzer = fuzz.Fuzzer(simulation, seed=5, resync=5, reset_probability=0,
                         shrink_seconds=120)
    report = fuzzer.run(5, log=found.append)
    assert report.mismatches > 0 and found
    problems, text = report.failures[0]
    commands = [line for line in text.splitlines() if line.startswith("    ")]
    # Shrunk to an error and the CLEAR_ERROR the model ignores.
    assert len(commands) <= 3, text
    assert any("CLEAR_ERROR" in line for line in commands), text
    assert any(code.name in text for code in ErrorCode if code), text


@pytest.mark.parametrize("config", [CONFIG, NpuConfig(rows=2, cols=3, act_depth=5,
                                                      weight_tiles=3, acc_depth=7)],
                         ids=["4x4", "2x3"])
def test_commands_come_from_the_rules(config):
    rng = np.random.default_rng(0)
    for opcode, cls in isa.INSTRUCTIONS.items():
        drawn = [fuzz.draw_valid(config, opcode, rng) for _ in range(40)]
        assert all(ins.error(config) == ErrorCode.NONE for ins in drawn)
        if cls.RULES:
            broken = [fuzz.draw_invalid(config, opcode, rng) for _ in range(40)]
            assert all(ins.error(config) != ErrorCode.NONE for ins in broken)
            # The valid ones reach the configuration's limits.
            for f in cls.FIELDS:
                assert len({getattr(ins, f.name) for ins in drawn}) > 1 or f.width == 1 \
                    or len(drawn[0].valid_values(f.name, config)) == 1
        else:
            assert fuzz.draw_invalid(config, opcode, rng) is None


def test_runs_hold_every_kind_of_command():
    rng = np.random.default_rng(1)
    runs = [fuzz.draw_run(CONFIG, rng) for _ in range(200)]
    codes = {check_command(item.word, CONFIG)[0] for run in runs for item in run.items}
    assert codes == set(ErrorCode) - {ErrorCode.BAD_PARAM}
    opcodes = {item.word & 0xF for run in runs for item in run.items}
    assert set(isa.INSTRUCTIONS) <= opcodes
    assert any(run.cut for run in runs) and any(run.extra for run in runs)
    assert any(run.stall_probability == 0 for run in runs)
    assert any(run.stall_probability > 0 for run in runs)
    # Some records break a rule: shift 0 or reserved bits.
    stride = row_stride(CONFIG, PARAM_RECORD_BYTES)
    invalid = []
    for item in (i for run in runs for i in run.items if i.word & 0xF == isa.Opcode.LOAD_PARAMS
                 and i.data):
        block = np.frombuffer(item.data, np.uint8).reshape(-1, stride)[:, :16]
        invalid += list(np.atleast_1d(isa.param_record_invalid(
            SimpleNamespace(**unpack_param_records(block)))))
    assert 0 < sum(invalid) < len(invalid)


def test_extreme_records_reach_the_limits():
    rng = np.random.default_rng(2)
    records = [fuzz.extreme_record(rng) for _ in range(300)]
    assert all(r.valid for r in records)
    assert {r.shift for r in records} >= {1, 63}
    assert {r.multiplier for r in records} >= {0, (1 << 31) - 1}
    assert {r.bias for r in records} >= {-(1 << 31), (1 << 31) - 1}
    assert any(r.low > r.high for r in records)


def test_main_prints_the_figures(simulation, capsys):
    assert fuzz.main(["--seed", "3", "--budget", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4x4: ") and "commands/s" in out and "mismatches 0" in out


def test_fuzzer_arguments_wrong(simulation):
    with pytest.raises(TypeError, match=r"^seed must be an int, not 'x'$"):
        fuzz.Fuzzer(simulation, seed="x")
    with pytest.raises(ValueError, match=r"^resync must be a positive integer, not 0$"):
        fuzz.Fuzzer(simulation, resync=0)
    with pytest.raises(ValueError, match=r"^reset_probability must be in 0..1, not 2$"):
        fuzz.Fuzzer(simulation, reset_probability=2)
