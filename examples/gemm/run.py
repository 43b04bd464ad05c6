"""``python -m examples.gemm.run`` — a random quantized matrix multiply on the simulated chip.

Lowers ``requant(A @ W + bias)`` for uint8 activations and int8 weights with the
driver's schedule (``driver.lowering.lower_matmul``), runs it on the Verilator-simulated
Verilog and on the golden model, then prints whether every byte matches (and equals
NumPy's requantized product), the chip's cycle count and the array utilization.
"""

import argparse
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from driver.lowering import lower_matmul
from hw.generate import config_argument
from sim.golden import GoldenNpu, requantize
from sim.programs import random_params


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m examples.gemm.run",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--m", type=int, default=64, help="rows of A (default 64)")
    parser.add_argument("--k", type=int, default=64, help="columns of A, rows of W (default 64)")
    parser.add_argument("--n", type=int, default=64, help="columns of W (default 64)")
    parser.add_argument("--backend", default="verilator",
                        choices=["verilator", "icarus", "amaranth"])
    parser.add_argument("--seed", type=int, default=0)
    config_argument(parser)
    args = parser.parse_args(argv)
    config = args.config
    console = Console()

    rng = np.random.default_rng(args.seed)
    a = rng.integers(0, 256, (args.m, args.k)).astype(np.uint8)
    w = rng.integers(-128, 128, (args.k, args.n)).astype(np.int8)
    params = random_params(rng, args.n)
    chip_pass = lower_matmul(w, batch=args.m, config=config, act_signed=False, records=params)
    commands, data_in = chip_pass.commands, chip_pass.data_in(a)
    console.print(f"[bold]{args.m}x{args.k}x{args.n}[/] quantized matmul on a {config}: "
                  f"{len(commands)} commands, {len(data_in)} data bytes")

    expected = GoldenNpu(config).run(commands, data_in)
    fields = ("bias", "multiplier", "shift", "rounding", "output_zero", "low", "high")
    numpy_result = requantize(a.astype(np.int64) @ w.astype(np.int64),
                              *(np.array([getattr(p, f) for p in params]) for f in fields))

    from driver.backends import open_backend
    started = time.perf_counter()
    with console.status(f"building and running on {args.backend}..."):
        with open_backend(args.backend, config=config) as chip:
            setup = time.perf_counter() - started
            started = time.perf_counter()
            result = chip.execute(commands, data_in)
            elapsed = time.perf_counter() - started

    match = result.data_out == expected.data_out and result.status == expected.status
    match = match and np.array_equal(chip_pass.decode(result.data_out), numpy_result)
    macs = args.m * args.k * args.n
    table = Table(show_header=False)
    table.add_row("every output byte matches the golden model and NumPy",
                  "[green]yes[/]" if match else "[red]NO[/]")
    table.add_row("output bytes", str(len(result.data_out)))
    table.add_row("chip cycles", f"{result.cycles:,}")
    table.add_row("cycle model", f"{expected.cycles:,}")
    table.add_row("array utilization (useful MACs / cycles x PEs)",
                  f"{macs / (result.cycles * config.rows * config.cols):.1%}")
    table.add_row(f"{args.backend} speed", f"{result.cycles / elapsed:,.0f} cycles/s "
                  f"(+{setup:.1f} s build and start)")
    console.print(table)
    return 0 if match else 1


if __name__ == "__main__":
    sys.exit(main())
