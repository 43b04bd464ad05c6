"""Run every section, write ``report.md``, ``results.json`` and the plots; the command line."""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .gemms import activity_rows, model_sweep, pruned_rows
from .plan import FULL_PLAN, QUICK_PLAN, RTL_BACKENDS
from .plots import plot_activity, plot_scalesim, plot_speed, plot_utilization
from .report import headline, write_report, yes
from .scalesim import scalesim_comparison, scalesim_problem
from .simulators import measure_backends, measure_long_runs, time_golden

__all__ = ["run_bench", "main"]

def run_bench(output, *, quick=False, scalesim=True, backends=RTL_BACKENDS, console=None,
              seed=0):
    """Run every section, write the report, results and plots to ``output``.

    Parameters
    ----------
    output : path-like
        Folder for ``report.md``, ``results.json`` and the plots (created).
    quick : bool
        Run :data:`QUICK_PLAN` instead of :data:`FULL_PLAN`.
    scalesim : bool
        Compare against SCALE-Sim (the report says so when it did not run).
    backends : sequence of str
        Simulators of sections 2 and 4, from :data:`RTL_BACKENDS`.
    console : rich.console.Console, optional
    seed : int
        Seed of the random GEMM operands.

    Returns
    -------
    dict
        What ``results.json`` holds.
    """
    console = console or Console()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    plan = QUICK_PLAN if quick else FULL_PLAN
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    results = {"meta": {"quick": quick, "seed": seed, "backends": list(backends),
                        "cpus": os.cpu_count(),
                        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        "python": platform.python_version(),
                        "load_average": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
                        "plan": asdict(plan)}}
    why_no_scalesim = None if scalesim else "switched off with --no-scalesim"
    why_no_scalesim = why_no_scalesim or scalesim_problem()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("benchmarks", total=5)

        def step(text):
            progress.update(task, description=text)

        step("cycle model: utilization sweep")
        results["utilization"] = model_sweep(plan, rng)
        progress.advance(task)
        results["validation"], results["speed"] = measure_backends(plan, rng, backends,
                                                                   on_step=step)
        results["long_runs"] = (measure_long_runs(plan, rng, on_step=step)
                                if "verilator" in backends else [])
        progress.advance(task)
        step("golden model: wall time")
        results["golden"] = time_golden(plan, rng)
        progress.advance(task)
        # After the timed simulators, so that SCALE-Sim's processes do not slow them down.
        step("SCALE-Sim")
        if why_no_scalesim is None:
            with tempfile.TemporaryDirectory(prefix="npu-scalesim-") as workdir:
                results["scalesim"] = {"ran": True, "reason": None,
                                       "rows": scalesim_comparison(plan, workdir)}
        else:
            results["scalesim"] = {"ran": False, "reason": why_no_scalesim, "rows": []}
        progress.advance(task)
        step("array activity, digits MLP, plots, report")
        results["activity"] = activity_rows(plan)
        results["pruned"] = pruned_rows(plan, rng)
        plot_utilization(results["utilization"], output / "utilization.png")
        if results["scalesim"]["ran"]:
            plot_scalesim(results["scalesim"]["rows"], output / "scalesim.png")
        plot_speed(results["speed"], results["golden"], output / "speed.png")
        plot_activity(results["activity"], output / "activity.png")
        results["meta"]["wall_seconds"] = time.perf_counter() - started
        (output / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, output)
        progress.advance(task)
    return results


def _consistent(results):
    """Every count that must agree does: replay vs golden, model vs RTL, bytes, and the
    digits MLP's replay vs the driver's count."""
    return (all(r["cycles"] == r["golden_cycles"] for r in results["utilization"]
                if r["golden_cycles"] is not None)
            and all(r["measured_cycles"] == r["model_cycles"] and r["bytes_match"]
                    for r in results["validation"])
            and all(r["measured_cycles"] == r["model_cycles"] and r["bytes_match"]
                    for r in results.get("long_runs", []) if r["available"])
            and all(r["cycles"] == r["driver_cycles"] for r in results["activity"]
                    if "driver_cycles" in r))


def main(argv=None):
    """Command line: run the benchmarks, print the headlines; exit 1 if a count disagrees."""
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="How fast the Npu is, and how fast it simulates.")
    parser.add_argument("--output", "-o", type=Path, default=Path("build/bench"),
                        help="folder for report.md, results.json and plots (default build/bench)")
    parser.add_argument("--quick", action="store_true", help="a reduced run (for tests)")
    parser.add_argument("--no-scalesim", dest="scalesim", action="store_false",
                        help="skip the SCALE-Sim comparison")
    parser.add_argument("--backends", default=",".join(RTL_BACKENDS),
                        help="comma-separated simulators to validate and time "
                             f"(default {','.join(RTL_BACKENDS)})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    backends = [name for name in args.backends.split(",") if name]
    unknown = set(backends) - set(RTL_BACKENDS)
    if unknown:
        parser.error(f"unknown backends {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(RTL_BACKENDS)}")
    console = Console()
    results = run_bench(args.output, quick=args.quick, scalesim=args.scalesim,
                        backends=backends, console=console, seed=args.seed)
    table = Table(title=f"systolic-npu benchmarks -> {args.output / 'report.md'}",
                  show_header=False)
    for name, value in headline(results).items():
        table.add_row(name, value)
    table.add_row("cycle model = golden model = RTL", yes(_consistent(results)))
    table.add_row("benchmark wall time", f"{results['meta']['wall_seconds']:.0f} s")
    console.print(table)
    return 0 if _consistent(results) else 1


if __name__ == "__main__":
    sys.exit(main())
