"""``python -m bench.fpga`` (``make bench-fpga``): place and route of every board build.

The builds of :data:`FPGA_BUILDS` (each a whole ``make bitstream``, 10-40 minutes on two
shared cores) write ``fpga.json`` and ``fpga.md`` into the benchmark folder, their build
folders under ``fpga/``, and section 7 of ``report.md`` when the benchmark's
``results.json`` is there (``python -m bench`` adds the section from ``fpga.json``
itself).
"""

import argparse
import json
import sys
from pathlib import Path

from boards import BOARDS
from boards.build import BuildFailed, build_bitstream
from boards.report import TABLE_HEADERS, table_row

from .report import write_report

__all__ = ["FPGA_BUILDS", "fpga_builds", "run_fpga_bench", "fpga_section", "main"]


def fpga_builds():
    """``(board, config)`` of every build: the ULX3S's default and largest array, and the
    largest array that fits the iCEBreaker (its default while none is known to fit)."""
    ulx3s, icebreaker = BOARDS["ulx3s"], BOARDS["icebreaker"]
    builds = [(ulx3s, ulx3s.default_config)]
    if ulx3s.largest_config is not None and ulx3s.largest_config != ulx3s.default_config:
        builds.append((ulx3s, ulx3s.largest_config))
    builds.append((icebreaker, icebreaker.largest_config or icebreaker.default_config))
    return builds


#: Every build ``make bench-fpga`` runs.
FPGA_BUILDS = fpga_builds()


def run_fpga_bench(output, *, builds=FPGA_BUILDS, log=print):
    """Build each of ``builds``; write ``fpga.json`` and ``fpga.md`` into ``output``.

    Returns
    -------
    list of dict
        The build reports (``boards.build.build_bitstream``); a build whose tool failed
        has ``"error"``.
    """
    output = Path(output)
    reports = []
    for board, config in builds:
        folder = output / "fpga" / f"{board.name}-{config.rows}x{config.cols}"
        try:
            reports.append(build_bitstream(board, config=config, output=folder, log=log))
        except BuildFailed as exc:
            report_path = folder / "report.json"
            report = json.loads(report_path.read_text()) if report_path.exists() else {
                "board": board.name, "config": config.as_dict(), "target_mhz": board.default_mhz}
            report["error"] = str(exc)
            reports.append(report)
    output.mkdir(parents=True, exist_ok=True)
    (output / "fpga.json").write_text(json.dumps(reports, indent=1) + "\n")
    (output / "fpga.md").write_text("\n".join(fpga_section(reports)) + "\n")
    return reports


def fpga_section(reports):
    """Section 7 of ``report.md``: one row per build."""
    if not reports:
        return ["## 7. FPGA builds", "", "Not measured: run `make bench-fpga`.", ""]
    rows = [table_row(r) if "error" not in r else
            (f"{r['config']['rows']}x{r['config']['cols']}", r["board"], "", "", "", "", "",
             "", "**build failed**") for r in reports]
    first = reports[0]
    return ["## 7. FPGA builds", "",
            f"Each row is one `make bitstream` (`boards/build.py`): the self-test top "
            f"(`hw/self_test.py`) around the chip, synthesized by yosys, placed and routed by "
            f"nextpnr and packed, with the tools of the `fpga` extra; measured "
            f"{first.get('date', '')} on commit {first.get('commit', 'unknown')}. Fmax is "
            "nextpnr's for the chip's clock, against the PLL's target; peak GOPS is "
            "2 x rows x cols x Fmax. Each build's `report.md` (under `fpga/`) has the "
            "critical path, every resource and the time of every step.", "",
            "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows), "",
            "Build times (s): " + "; ".join(
                f"{r['board']} {r['config']['rows']}x{r['config']['cols']}: "
                + ", ".join(f"{step} {seconds:.0f}"
                            for step, seconds in r.get("seconds", {}).items())
                for r in reports) + ".", ""]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.fpga",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--output", "-o", type=Path, default=Path("build/bench"))
    args = parser.parse_args(argv)
    reports = run_fpga_bench(args.output, log=lambda line: print(line, file=sys.stderr))
    print((args.output / "fpga.md").read_text())
    results = args.output / "results.json"
    if results.exists():
        write_report(json.loads(results.read_text()), args.output)
    return 0 if all("error" not in r for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
