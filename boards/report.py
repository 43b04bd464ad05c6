"""A build's ``report.json`` and its readable summary ``report.md``."""

import json
from pathlib import Path

__all__ = ["write_report", "summary_markdown", "table_row", "TABLE_HEADERS"]

#: Columns of the one-line-per-build table (README, ``make bench-fpga``).
TABLE_HEADERS = ("array", "board", "LUT", "FF", "DSP", "BRAM", "Fmax / target",
                 "peak GOPS", "built")


def _used(report, kind):
    entry = report.get("utilization", {}).get(kind)
    if entry is None or entry["available"] is None:
        return ""
    percent = 100 * entry["used"] / entry["available"] if entry["available"] else 0
    return f"{entry['used']:,} / {entry['available']:,} ({percent:.0f} %)"


def _ff(report):
    """FF used: nextpnr's count where the part has its own type, else yosys' cells."""
    if "FF" in report.get("utilization", {}):
        return _used(report, "FF")
    flops = sum(count for kind, count in report.get("cells", {}).items()
                if kind.startswith(("SB_DFF", "TRELLIS_FF")))
    return f"{flops:,} (in the logic cells)" if flops else ""


def _outcome(report):
    if report.get("fits") is False:
        return "**does not fit**"
    if report.get("fits") is None:
        return "not placed"
    timing = "meets timing" if report.get("meets_timing") else "**misses timing**"
    return f"{timing}, {'bitstream' if report.get('bitstream') else 'not packed'}"


def table_row(report):
    """One build as a row of :data:`TABLE_HEADERS`."""
    config = report["config"]
    fmax = report.get("fmax_mhz")
    return (f"{config['rows']}x{config['cols']}", report["board"], _used(report, "LUT"),
            _ff(report), _used(report, "DSP"), _used(report, "BRAM"),
            f"{fmax:.1f} / {report['target_mhz']:g} MHz" if fmax else
            f"- / {report['target_mhz']:g} MHz",
            f"{report['peak_gops']:.2f}" if report.get("peak_gops") else "", _outcome(report))


def _table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(report):
    """``report.md``: what was built, what it used, how fast it runs, how long it took."""
    lines = [f"# {report['title']}: {report['config_text']}", "",
             f"{report['date']}, commit {report['commit'] or 'unknown'}. "
             + (f"Serial link: {report['serial']['baud']:,} baud, divisor "
                f"{report['serial']['divisor']}, on the {report['serial']['uart']}."
                if report.get("link") == "serial"
                else f"Self-test: {report.get('self_test', '')}."), "",
             f"Outcome: {_outcome(report)}."]
    if report.get("fits") is False:
        lines += ["", f"The design needs more than the part has. On this board: "
                      f"{report['fits_note']}."]
    lines += ["", "## Resources", ""]
    rows = [(kind, entry["type"], f"{entry['used']:,}",
             "" if entry["available"] is None else f"{entry['available']:,}",
             "" if not entry["available"] else f"{100 * entry['used'] / entry['available']:.0f} %")
            for kind, entry in report.get("utilization", {}).items()]
    if rows:
        lines += [_table(("kind", "nextpnr type", "used", "available", "share"), rows)]
    else:
        lines += ["(not placed)"]
    if report.get("cells"):
        lines += ["", "Cells after synthesis (yosys): " + ", ".join(
            f"{kind} {count:,}" for kind, count in report["cells"].items()) + "."]
    lines += ["", "## Clocks", "",
              f"PLL: {report['pll']['primitive']}, {report['pll']['input_mhz']:g} MHz in, "
              f"{report['pll']['output_mhz']:g} MHz out"
              + (f" (VCO {report['pll']['vco_mhz']:g} MHz)" if report['pll']['vco_mhz'] else "")
              + f", target {report['target_mhz']:g} MHz.", ""]
    clocks = report.get("clocks", {})
    if clocks:
        lines += [_table(("clock net", "Fmax (nextpnr)", "target", "met"),
                         [(name, f"{c['achieved_mhz']:.2f} MHz", f"{c['target_mhz']:.2f} MHz",
                           "yes" if c["achieved_mhz"] >= c["target_mhz"] else "**NO**")
                          for name, c in clocks.items()])]
    path = report.get("critical_path")
    if path:
        lines += ["", f"Critical path: {path['delay_ns']:.1f} ns from `{path['from']}` "
                      f"to `{path['to']}`."]
    if report.get("peak_gops"):
        lines += ["", f"Peak throughput at Fmax: {report['peak_gops']:.2f} GOPS "
                      "(2 x rows x cols x Fmax)."]
    lines += ["", "## Build", "",
              _table(("step", "wall time"),
                     [(step, f"{value:.1f} s") for step, value in report["seconds"].items()]),
              "", "Tools: " + ", ".join(f"{name} {version or 'not installed'}"
                                         for name, version in report["tools"].items()) + "."]
    if report.get("bitstream"):
        lines += ["", f"Bitstream: `{report['bitstream']}`. Load it with: "
                  + " or ".join(f"`{command}`" for command in report["load"]) + "."]
    return "\n".join(lines) + "\n"


def write_report(report, output):
    """Write ``report.json`` and ``report.md`` into the folder ``output``."""
    output = Path(output)
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (output / "report.md").write_text(summary_markdown(report))
