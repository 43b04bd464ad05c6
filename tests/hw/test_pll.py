"""PLL divider search (``hw/pll.py``) against the data sheet limits and the tools that
ship with the fpga extra (``ecppll``, ``icepll``)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw.pll import (
    ECP5_PLL_LIMITS,
    ICE40_PLL_LIMITS,
    DirectClock,
    Ecp5PllSettings,
    Ice40PllSettings,
    Pll,
    ecp5_pll,
    ice40_pll,
    pll_settings,
)


def _tool(name):
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _within(value, bounds):
    return bounds[0] <= value <= bounds[1]


@pytest.mark.parametrize("mhz", [12.5, 25, 30, 40, 50, 60, 75, 100, 133.333])
def test_ecp5_dividers_stay_in_the_limits(mhz):
    settings = ecp5_pll(input_mhz=25, output_mhz=mhz)
    assert abs(settings.output_mhz - mhz) <= 0.01 * mhz
    assert _within(settings.pfd_mhz, ECP5_PLL_LIMITS.pfd)
    assert _within(settings.vco_mhz, ECP5_PLL_LIMITS.vco)
    assert settings.output_mhz == pytest.approx(25 / settings.ref_div * settings.fb_div)


@pytest.mark.parametrize("mhz", [16.5, 24, 30, 36, 48, 100])
def test_ice40_dividers_stay_in_the_limits(mhz):
    settings = ice40_pll(input_mhz=12, output_mhz=mhz)
    assert abs(settings.output_mhz - mhz) <= 0.01 * mhz
    assert _within(settings.pfd_mhz, ICE40_PLL_LIMITS.pfd)
    assert _within(settings.vco_mhz, ICE40_PLL_LIMITS.vco)
    assert 1 <= settings.filter_range <= 6


@pytest.mark.parametrize("mhz", [25, 30, 40, 46.875, 60, 100])
def test_ecp5_frequency_as_ecppll(mhz, tmp_path):
    tool = _tool("yowasp-ecppll")
    if tool is None:
        pytest.skip("yowasp-ecppll is not installed (the fpga extra brings it)")
    out = subprocess.run([tool, "-i", "25", "-o", str(mhz)], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    achieved = float(re.search(r"clkout0 frequency: ([\d.]+)", out).group(1))
    assert ecp5_pll(input_mhz=25, output_mhz=mhz).output_mhz == pytest.approx(achieved,
                                                                              abs=1e-3)


@pytest.mark.parametrize("mhz", [24, 30, 36, 48])
def test_ice40_dividers_as_icepll(mhz, tmp_path):
    tool = _tool("yowasp-icepll")
    if tool is None:
        pytest.skip("yowasp-icepll is not installed (the fpga extra brings it)")
    out = subprocess.run([tool, "-i", "12", "-o", str(mhz)], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    theirs = {name: int(value) for name, value in
              re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", out, re.MULTILINE)}
    ours = ice40_pll(input_mhz=12, output_mhz=mhz)
    assert (ours.divr, ours.divf, ours.divq, ours.filter_range) == (
        theirs["DIVR"], theirs["DIVF"], theirs["DIVQ"], theirs["FILTER_RANGE"])


def test_unreachable_frequency_names_the_nearest():
    # From 25 MHz the reference divider is at most 8 (3.125 MHz phase detector), so 48
    # MHz lies between 25 * 15 / 8 and 25 * 2.
    with pytest.raises(ValueError, match=r"cannot make 48 MHz.*nearest: 46.88 MHz and 50 MHz"):
        ecp5_pll(input_mhz=25, output_mhz=48)
    assert ecp5_pll(input_mhz=25, output_mhz=48, tolerance=0.03).output_mhz == 46.875


def test_pll_settings_wrong():
    with pytest.raises(ValueError, match="output_mhz must be within 10.0..400.0"):
        ecp5_pll(input_mhz=25, output_mhz=500)
    with pytest.raises(ValueError, match="input_mhz must be within 10.0..133.0"):
        ice40_pll(input_mhz=5, output_mhz=20)
    with pytest.raises(TypeError, match="output_mhz must be a positive number"):
        ecp5_pll(input_mhz=25, output_mhz="50")
    with pytest.raises(TypeError, match="input_mhz must be a positive number"):
        ice40_pll(input_mhz=True, output_mhz=20)
    with pytest.raises(ValueError, match="tolerance must be a fraction"):
        ecp5_pll(input_mhz=25, output_mhz=50, tolerance=1.5)
    with pytest.raises(ValueError, match="family must be one of ecp5, ice40"):
        pll_settings("gowin", input_mhz=25, output_mhz=50)
    with pytest.raises(ValueError, match="output_mhz must be within 16.0..275.0"):
        pll_settings("ice40", input_mhz=12, output_mhz=13)
    with pytest.raises(TypeError, match="settings must be"):
        Pll(settings=None, clk_in=None)


def test_pll_settings_by_family():
    assert isinstance(pll_settings("ecp5", input_mhz=25, output_mhz=40), Ecp5PllSettings)
    assert isinstance(pll_settings("ice40", input_mhz=12, output_mhz=24), Ice40PllSettings)
    # The oscillator's own frequency within the PLL's range still goes through the PLL...
    assert isinstance(pll_settings("ecp5", input_mhz=25, output_mhz=25), Ecp5PllSettings)
    # ... and below it the oscillator clocks the chip directly.
    direct = pll_settings("ice40", input_mhz=12, output_mhz=12)
    assert isinstance(direct, DirectClock) and direct.output_mhz == 12
