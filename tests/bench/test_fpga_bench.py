"""``make bench-fpga`` (``bench/fpga.py``) without the tools: which builds it runs, and the
table it writes."""

import json

import pytest

from bench import fpga
from boards import BOARDS
from boards.build import BuildFailed
from hw.config import NpuConfig


def test_builds_cover_both_boards():
    builds = fpga.fpga_builds()
    ulx3s, icebreaker = BOARDS["ulx3s"], BOARDS["icebreaker"]
    assert builds[0] == (ulx3s, NpuConfig())
    assert (ulx3s, ulx3s.largest_config) in builds
    assert builds[-1][0] is icebreaker
    assert builds[-1][1] == (icebreaker.largest_config or icebreaker.default_config)


def _fake_report(board, config, *, fits=True):
    return {"board": board.name, "config": config.as_dict(), "target_mhz": board.default_mhz,
            "date": "today", "commit": "abc", "fits": fits, "meets_timing": fits,
            "bitstream": "x" if fits else None, "fmax_mhz": 30.0 if fits else None,
            "peak_gops": 1.0 if fits else None, "seconds": {"synthesis": 12.0},
            "utilization": {"LUT": {"type": "T", "used": 5, "available": 10}}}


def test_run_writes_the_table(tmp_path, monkeypatch):
    calls = []

    def build(board, *, config, output, log):
        calls.append((board.name, config, output))
        if board.name == "icebreaker":
            raise BuildFailed("nextpnr-ice40 failed")
        return _fake_report(board, config)

    monkeypatch.setattr(fpga, "build_bitstream", build)
    builds = [(BOARDS["ulx3s"], NpuConfig()), (BOARDS["icebreaker"], NpuConfig(rows=1, cols=1))]
    reports = fpga.run_fpga_bench(tmp_path, builds=builds, log=lambda line: None)
    assert [name for name, _, _ in calls] == ["ulx3s", "icebreaker"]
    assert calls[0][2] == tmp_path / "fpga" / "ulx3s-8x8"
    assert json.loads((tmp_path / "fpga.json").read_text()) == reports
    assert "error" in reports[1]
    table = (tmp_path / "fpga.md").read_text()
    assert "| 8x8 | ulx3s | 5 / 10 (50 %) |" in table
    assert "| 1x1 | icebreaker |" in table and "**build failed**" in table
    assert "ulx3s 8x8: synthesis 12" in table


@pytest.mark.parametrize("fits", [True, False])
def test_section_says_whether_it_fits(fits):
    board = BOARDS["icebreaker"]
    text = "\n".join(fpga.fpga_section([_fake_report(board, board.default_config,
                                                     fits=fits)]))
    assert ("**does not fit**" in text) != fits
    assert "meets timing" in text if fits else "30.0" not in text


def test_section_without_builds():
    assert "Not measured: run `make bench-fpga`" in "\n".join(fpga.fpga_section([]))
