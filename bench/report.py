"""``report.md``: the benchmark's results as tables and the text that explains them."""

import json
from pathlib import Path

from driver.lowering import tile_plan

from .activity import ACTIVITIES
from .gemms import PROGRAM_CHECK_MACS
from .gemms import utilization as utilization_of
from .plan import DEFAULT_CONFIG, DIGITS, PREVIOUS_DESIGN_CYCLES, Gemm, array_name

__all__ = ["write_report", "headline", "yes"]

#: The column of the cycles of the removed benchmark schedule (``GEMM_SCHEDULE_CYCLES``).
SCHEDULE_COLUMN = "gemm_schedule (8d016d9)"

def _markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _percent(value):
    return f"{100 * value:.1f} %"


def yes(flag):
    return "yes" if flag else "**NO**"


def _cycles(value):
    return "" if value is None else f"{value:,}"


def _cycles_and_utilization(cycles, utilization):
    return f"{cycles:,} cycles, {_percent(utilization)} utilization"


def headline(results):
    """The numbers README and the console summary quote."""
    def with_previous(name, cycles, utilization, macs):
        text = _cycles_and_utilization(cycles, utilization)
        previous = PREVIOUS_DESIGN_CYCLES.get(name)
        if previous:
            text += (f" (one command at a time: {previous:,}, "
                     f"{_percent(utilization_of(DEFAULT_CONFIG, macs, previous))})")
        return text

    default = array_name(DEFAULT_CONFIG)
    headline_gemm, golden_gemm = results["activity"][0]["workload"], results["golden"]["gemm"]
    on_default = [r for r in results["utilization"] if r["array"] == default]
    lines = {}
    for row in on_default:
        if row["gemm"] in (headline_gemm, golden_gemm):
            lines[f"{row['gemm']} on {default}"] = with_previous(
                row["gemm"], row["cycles"], row["utilization"], row["macs"])
    best = max(on_default, key=lambda r: r["utilization"])
    lines[f"best on {default}"] = f"{best['gemm']}: {_percent(best['utilization'])}"
    for row in results["activity"]:
        if row["workload"] == DIGITS:
            lines[f"{DIGITS} on {default}"] = with_previous(
                DIGITS, row["cycles"], row["utilization"], row["macs"])
    for row in results["scalesim"]["rows"]:
        if (row["array"], row["gemm"]) == (default, headline_gemm):
            lines[f"SCALE-Sim {row['gemm']} on {row['array']}"] = (
                f"{row['scalesim_compute_cycles']:,} compute cycles vs our "
                f"{row['our_cycles']:,} for the whole layer "
                f"({row['our_streaming_cycles']:,} streaming)")
    for s in results["speed"]:
        lines[f"{s['backend']} speed"] = (f"{s['cycles_per_second']:,.0f} cycles/s"
                                          if s["available"] else "unavailable")
    for r in results.get("long_runs", []):
        lines[f"verilator speed, {r['gemm']} on {r['array']}"] = (
            f"{r['cycles_per_second']:,.0f} cycles/s, {r['macs_per_second']:,.0f} MACs/s"
            if r["available"] else "unavailable")
    golden = results["golden"]
    lines[f"golden model {golden['gemm']}"] = f"{golden['seconds']:.2f} s"
    return lines


def _start(row):
    """A speed row's build / start column."""
    what = {True: "start (build cached)", False: "build and start",
            None: "elaborate and start"}[row["build_cached"]]
    return f"{row['start_seconds']:.1f} s {what}"


def _block_note(widths):
    """Why utilization stops growing with M: the rows one M block can hold."""
    config = DEFAULT_CONFIG
    blocks = ", ".join(f"{tile_plan(k, k, 1 << 16, config).m_block} at K = {k}" for k in widths)
    return ("Utilization stops growing with M once an M block is full: a block keeps every K "
            "tile of its activations in the buffer while all N tiles run, so it holds at "
            "most act_depth / ceil(K / rows) rows, half of that where two blocks take turns "
            "(the next block's activations load while this one streams); on the "
            f"{array_name(config)} array {blocks} rows. Unless all weight tiles fit the weight "
            "buffer, every further block loads them again, and a shallow block streams "
            "each tile for fewer cycles than the next one takes to arrive over the data "
            "stream, which is why the square curves fall beyond 128.")


def _share(part, total):
    return f"{part:,} ({100 * part / total:.0f} %)"


def _scalesim_section(rows):
    formula_holds = all(r["scalesim_compute_cycles"] == r["scalesim_formula"] for r in rows)
    ratios = [r["our_cycles"] / r["scalesim_compute_cycles"] for r in rows]
    return [
        "![SCALE-Sim](scalesim.png)", "",
        "SCALE-Sim 3.0.0, weight-stationary dataflow, same array, same GEMMs (GEMM "
        "topology `M, N, K`), CALC bandwidth mode. The three counts measure different "
        "things:", "",
        "- **SCALE-Sim compute** is the array alone, operands already in its SRAMs: for "
        "each rows x cols weight tile (a *fold*) rows cycles to fill the weights, M cycles "
        "of activations and rows + cols - 2 of skew and drain, one fold after the other: "
        "`folds x (2 rows + cols + M - 2) - 1` (it reports the last cycle's index; this "
        f"formula gives its count for every row: {yes(formula_holds)}). No stalls occur "
        "in this mode.",
        "- **Ours, streaming** counts the cycles in which an activation vector enters the "
        "array: M x folds, since every row of A meets every weight tile once. It is the "
        "floor of any weight-stationary schedule on the array, and SCALE-Sim's count "
        "without its per-fold fill, skew and drain.",
        "- **Ours, whole layer** is every cycle from the first command to idle, with what "
        "SCALE-Sim leaves out: command dispatch, activation, weight and parameter loads "
        "over the 8-byte data stream, requantization and stores. In exchange the next "
        "tile's weights load and preload into the idle bank while the current tile "
        "streams, and one tile's skew and drain overlap the next tile's streaming; "
        "SCALE-Sim's weight-stationary count overlaps neither. Large K splits M into "
        "blocks of at most act_depth / ceil(K / rows) rows and, unless all tiles stay "
        "resident, each block loads its weight tiles again, hence more weight tiles than "
        "folds.", "",
        f"Our whole layer takes {min(ratios):.2f}-{max(ratios):.2f}x SCALE-Sim's compute "
        "cycles here. Where the ratio is near "
        + ("or below " if min(ratios) < 1 else "")
        + "1, hiding each fold's weight fill, skew and drain behind streaming saves "
        "about as much as moving the operands over the data stream costs"
        + (", or more" if min(ratios) < 1 else "")
        + ". It is highest for small GEMMs on large arrays, where the first loads, the "
        "first fill and the last drain are a large part of the whole; a large K adds "
        "weight tiles, since every M block loads them again.", "",
        _markdown_table(
            ["array", "GEMM", "SCALE-Sim compute", "SCALE-Sim util.",
             "weight tiles (SCALE-Sim / ours)", "ours streaming", "ours whole layer",
             "ours util.", "whole layer / SCALE-Sim", SCHEDULE_COLUMN],
            [(r["array"], r["gemm"], f"{r['scalesim_compute_cycles']:,}",
              _percent(r["scalesim_utilization"]),
              f"{r['scalesim_folds']:,} / {r['our_weight_tiles']:,}",
              f"{r['our_streaming_cycles']:,}", f"{r['our_cycles']:,}",
              _percent(r["our_utilization"]), f"{ratio:.2f}x",
              _cycles(r["our_schedule_cycles"]))
             for r, ratio in zip(rows, ratios, strict=True)]), ""]


def _activity_section(rows):
    first = rows[0]
    waits = {name: first["parts"][name] for name in ACTIVITIES if name != "streaming"}
    largest_wait = max(waits, key=waits.get)
    compared = [r for r in rows if r["previous_cycles"]]
    return [
        "## 5. What the array does in every cycle", "", "![activity](activity.png)", "",
        f"Every cycle of a run on the {first['array']} array, from the first command to "
        "idle, by what the array does in the cycle model's schedule. *Streaming* is a "
        "cycle in which an activation vector enters the array, the only useful work; "
        "the rest is waiting, before the first vector, between two MATMULs or after the "
        "last. A wait between two MATMULs is named after what was issued between them: "
        "weight loads only (the next tile's load over the data stream and its preload "
        "into the idle bank took longer than the previous tile streamed), a store and "
        "a parameter load (the next N tile: the STORE waits for every result of the "
        "array in the accumulator, the next MATMUL for the STORE's accumulator reads), "
        "or activation loads (the next M block: a LOAD_ACT waits until the array is done "
        "with the buffer). Utilization falls below the streaming share only where K or "
        "N do not fill the array. The digits MLP is the driver's command streams, one "
        "run per layer (cycle model: "
        + ", ".join(f"{r['cycles']:,}" for r in rows if r["workload"] == DIGITS)
        + "; the driver's golden backend: "
        + ", ".join(f"{r['driver_cycles']:,}" for r in rows if r["workload"] == DIGITS)
        + ").", "",
        _markdown_table(
            ["workload", "cycles", *ACTIVITIES, "weight tiles preloaded / reused",
             "utilization", SCHEDULE_COLUMN, "one command at a time", "utilization then"],
            [(r["workload"], f"{r['cycles']:,}",
              *(_share(r["parts"][name], r["cycles"]) for name in ACTIVITIES),
              f"{r['preloads']:,} / {r['reused_tiles']:,}", _percent(r["utilization"]),
              _cycles(r["schedule_cycles"]), _cycles(r["previous_cycles"]),
              _percent(r["previous_utilization"]) if r["previous_cycles"] else "")
             for r in rows]), "",
        f"Columns: {'; '.join(f'*{name}*: {text}' for name, text in ACTIVITIES.items())}. "
        "*One command at a time* is the previous design (commit 535ac24), which fetched "
        "each command only when the datapath had drained from the one before.", "",
        f"For {first['workload']} the array streams in "
        f"{_percent(first['parts']['streaming'] / first['cycles'])} of the cycles and "
        f"waits {first['parts']['weights']:,} cycles for weight tiles"
        + (" (every load and preload hides behind the previous tile's streaming)"
           if first["parts"]["weights"] == 0 else "")
        + f"; its largest wait is *{largest_wait}* "
        f"({_percent(waits[largest_wait] / first['cycles'])}). Utilization went from "
        + ", ".join(f"{_percent(r['previous_utilization'])} to {_percent(r['utilization'])}"
                    f" ({r['workload']})" for r in compared)
        + ". The driver keeps a layer's weight tiles resident across M blocks when all of "
        "them fit the weight buffer's slots (reused tiles above); otherwise it loads a "
        "tile before every MATMUL.", ""]


def _pruning_section(rows):
    if not rows:
        return []
    table = [[r["array"], r["gemm"], f"{r['share']:.0%}", f"{r['zero_tiles']} of {r['tiles']}",
              f"{r['commands']:,}", f"{r['cycles']:,}",
              _share(r["saved"], r["cycles"] + r["saved"]),
              yes(r["exact"])] for r in rows]
    return ["## 6. Pruned weights", "",
            "The driver skips weight tiles that are entirely zero (weights equal to their "
            "zero point): no LOAD_WEIGHT, no MATMUL. Each GEMM here runs dense and with a "
            "share of its `rows` x `cols` weight tiles zeroed at random (block sparsity, "
            "the granularity of the skip), lowered with `skip_zero_tiles=True`, on the "
            "golden model with random data; *exact* compares its int32 output with NumPy. "
            "An output tile whose tiles are all zero keeps one MATMUL to clear its "
            "accumulator.", "",
            _markdown_table(["array", "GEMM", "pruned", "zero tiles", "commands", "cycles",
                             "saved", "exact"], table), ""]


def _fpga_section(output):
    """Section 7 from ``fpga.json`` of ``make bench-fpga``, if it ran into this folder."""
    from .fpga import fpga_section
    path = output / "fpga.json"
    return fpga_section(json.loads(path.read_text()) if path.exists() else [])


def write_report(results, output):
    """``report.md`` from ``results`` (as written to ``results.json``)."""
    meta = results["meta"]
    sweep, validation = results["utilization"], results["validation"]
    scalesim, speed, golden = results["scalesim"], results["speed"], results["golden"]
    checked = [r for r in sweep if r["golden_cycles"] is not None]
    out = [f"# systolic-npu benchmarks{' (quick run)' if meta['quick'] else ''}", "",
           f"{meta['date']}, {meta['cpus']} CPUs, load average {meta['load_average']} at the "
           f"start, Python {meta['python']}, {meta['wall_seconds']:.0f} s in all. "
           f"Reproduce with `make bench` (or `python -m bench --output DIR [--quick]`).", "",
           "Cycles are clock cycles of an unstalled run from the first command to idle, "
           "as the chip's own cycle counter reports them. Utilization is useful MACs "
           "(M·K·N) / (cycles × rows × cols). Every GEMM is the whole quantized layer as "
           "the driver lowers it (`driver.lowering.lower_matmul`): activation, weight and "
           "parameter loads over the 8-byte data stream, MATMULs, requantized stores, a "
           f"closing status read. *{SCHEDULE_COLUMN}* is the same GEMM under the "
           "benchmark's own, since removed schedule (`GEMM_SCHEDULE_CYCLES` in "
           "`bench/plan.py`), which ran GEMMs apart from the driver. The chip overlaps "
           "them: each command is dispatched as soon as its unit is free and no earlier "
           "command still uses what it touches, and the next weight tile preloads into "
           "the idle weight bank while the array streams.", "",
           "## Headlines", "",
           _markdown_table(["", ""], headline(results).items()), ""]

    out += ["## 1. Cycles and array utilization (cycle model)", "",
            "![utilization](utilization.png)", "",
            f"The cycle model replayed {len(sweep)} GEMMs on three arrays (default buffers: "
            "512 activation vectors, 4 weight tiles, 512 accumulator rows), command by "
            "command, until the schedule of an M block repeated itself shifted in time; "
            "the remaining identical blocks add the same cycles each. For the "
            f"{len(checked)} GEMMs with at most {PROGRAM_CHECK_MACS:,} MACs the real "
            "program, data included, also ran on the golden model; its cycle count agrees "
            f"for {sum(r['cycles'] == r['golden_cycles'] for r in checked)} of "
            f"{len(checked)}.", "",
            _block_note(meta["plan"]["mlp_widths"]), ""]
    for array in dict.fromkeys(r["array"] for r in sweep):
        out += [f"**{array} array**", "", _markdown_table(
            ["GEMM (MxKxN)", "kind", "commands", "cycles", "utilization", SCHEDULE_COLUMN],
            [(r["gemm"], r["family"], f"{r['commands']:,}", f"{r['cycles']:,}",
              _percent(r["utilization"]), _cycles(r["schedule_cycles"]))
             for r in sweep if r["array"] == array]), ""]

    out += ["## 2. The cycle model against the simulated RTL", "",
            f"Random GEMMs on the {array_name(DEFAULT_CONFIG)} array, each run on "
            f"{', '.join(meta['backends'])} with the chip's cycle counter next to the cycle "
            "model's count, and every output byte against the golden model.", ""]
    if validation:
        out += [_markdown_table(
            ["backend", "GEMM", "measured cycles", "cycle model", "equal", "bytes match"],
            [(r["backend"], r["gemm"], f"{r['measured_cycles']:,}", f"{r['model_cycles']:,}",
              yes(r["measured_cycles"] == r["model_cycles"]), yes(r["bytes_match"]))
             for r in validation]), ""]
    out += [f"- {s['backend']} did not run: {s['reason']}" for s in speed if not s["available"]]

    out += ["", "## 3. Side by side with SCALE-Sim", ""]
    if scalesim["ran"]:
        out += _scalesim_section(scalesim["rows"])
    else:
        out += [f"**SCALE-Sim was not run**: {scalesim['reason']}", ""]

    out += ["## 4. Simulation speed", "", "![speed](speed.png)", "",
            f"Each simulator runs the same {Gemm(**meta['plan']['speed'])} GEMM on the "
            f"{array_name(DEFAULT_CONFIG)} array after the validation runs above (so it is warm); "
            "cycles per wall-clock second exclude building and starting, which are listed "
            "separately (for Verilator and Icarus: generating the Verilog, compiling it when "
            "no cached build matches, starting the simulator; for Amaranth: elaboration). "
            "*verilator* is the Verilated chip with its host loop compiled next to it "
            "(`sim/compiled_harness.py`, the driver's default); under *verilator-cocotb* "
            "and *icarus* a Python cocotb testbench drives the RTL every cycle, which bounds "
            "their speed. MACs/s counts the array's multiply-accumulates (rows x cols per "
            "activation vector) per wall-clock second.", ""]
    speed_rows = []
    for s in speed:
        if not s["available"]:
            speed_rows.append((s["backend"], "unavailable", "", "", "", "", ""))
            continue
        speed_rows.append((s["backend"], _start(s), f"{s['measured_cycles']:,}",
                           f"{s['seconds']:.2f} s", f"{s['cycles_per_second']:,.0f}",
                           f"{s['macs_per_second']:,.0f}",
                           yes(s["measured_cycles"] == s["model_cycles"] and s["bytes_match"])))
    speed_rows.append(("golden model (NumPy)", "", f"{golden['cycles']:,}",
                       f"{golden['seconds']:.2f} s", f"{golden['cycles_per_second']:,.0f}",
                       "", ""))
    out += [_markdown_table(["simulator", "build / start", "cycles", "wall time", "cycles/s",
                             "MACs/s", "cycles and bytes correct"], speed_rows), "",
            f"The golden model ran a {golden['gemm']} GEMM ({golden['commands']:,} commands) "
            f"in {golden['seconds']:.2f} s.", ""]
    long_runs = results.get("long_runs", [])
    if long_runs:
        out += ["**Long layers on the compiled Verilator loop** (`driver.open(\"verilator\")`, "
                "unstalled, every byte against the golden model, cycles against the cycle "
                "model):", "", _markdown_table(
                    ["array", "GEMM", "build / start", "cycles", "wall time", "cycles/s",
                     "MACs/s", "cycles and bytes correct"],
                    [(r["array"], r["gemm"], "unavailable", "", "", "", "", "")
                     if not r["available"] else
                     (r["array"], r["gemm"], _start(r), f"{r['measured_cycles']:,}",
                      f"{r['seconds']:.2f} s", f"{r['cycles_per_second']:,.0f}",
                      f"{r['macs_per_second']:,.0f}",
                      yes(r["measured_cycles"] == r["model_cycles"] and r["bytes_match"]))
                     for r in long_runs]), ""]

    out += _activity_section(results["activity"])
    out += _pruning_section(results.get("pruned", []))
    out += _fpga_section(Path(output))
    (Path(output) / "report.md").write_text("\n".join(out))


