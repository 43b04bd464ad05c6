"""The digits MLP over the serial backend, on the simulated board: the chip and its serial
link in Verilator, bridged to TCP (:mod:`sim.serial_harness`), optionally through the
fault proxy (:mod:`sim.fault_proxy`).  Prints the examples' figures, the link's, and the
run's time at 3 Mbaud in simulated time with where it goes.

Run from the repository root::

    python -m examples.digits.serial_sim [--faults 0.01] [--images 200]
"""

import argparse
import time

from driver.backends.serial import SerialBackend
from hw.generate import config_argument
from sim.fault_proxy import FaultProxy
from sim.serial_harness import SimulatedBoard

from .run import main as digits

__all__ = ["run", "time_report"]

#: The simulated line.
BAUD = 3_000_000


def time_report(stats, link, *, divisor, chip_cycles):
    """Where the simulated time went: a list of ``(what, seconds, share)``.

    ``stats`` are the board's (:attr:`SimulatedBoard.stats`), ``link`` the backend's
    summary, ``chip_cycles`` the chip's own count of its busy cycles (both models).
    """
    clock = BAUD * divisor
    total = stats["cycles"] / clock
    byte = 10 / BAUD
    rows = [("simulated time (clock running)", total, 1.0)]
    for what, count in (("host to chip on the line", stats["bytes_in"]),
                        ("  command words", link.get("commands_bytes", 0)),
                        ("  data-in", link.get("data_bytes", 0)),
                        ("chip to host on the line", stats["bytes_out"]),
                        ("  results", link.get("payload_received", 0))):
        rows.append((what, count * byte, count * byte / total if total else 0))
    rows.append(("chip busy or holding a command (its cycles counter)", chip_cycles / clock,
                 chip_cycles / clock / total if total else 0))
    return rows


def run(*, config=None, faults=0.0, images=None, seed=1, echo=print):
    """Run the example on a simulated board; return its result with ``board`` stats,
    ``proxy`` counts and the ``time`` report added."""
    started = time.perf_counter()
    with SimulatedBoard(config=config) as board:
        echo(f"simulated board ready in {time.perf_counter() - started:.0f} s: "
             f"{BAUD:,} baud, divisor {board.divisor}, clock "
             f"{BAUD * board.divisor / 1e6:g} MHz")
        proxy, counts = None, None
        url = board.url
        if faults:
            proxy = FaultProxy(target=("127.0.0.1", board.port), flip_rate=faults / 2,
                               drop_rate=faults / 2, duplicate_rate=0.01, seed=seed)
            url = proxy.url
        try:
            result = digits(SerialBackend.name, config=config,
                            options={"port": url, "timeout": 30}, images=images, echo=echo)
        finally:
            if proxy is not None:
                counts = proxy.counts
                proxy.close()
        result["board"] = board.stats
        result["proxy"] = counts
    chip = sum(s.cycles for s in (result["torch_stats"], result["onnx_stats"]))
    result["time"] = time_report(result["board"], result["link"], divisor=board.divisor,
                                 chip_cycles=chip)
    if result["proxy"]:
        for direction, counts in result["proxy"].items():
            echo(f"  faults {direction}: {counts['flipped']} bits flipped, {counts['dropped']} "
                 f"bytes dropped, {counts['duplicated']} frames sent twice, of "
                 f"{counts['bytes']:,} bytes")
    echo("  time at 3 Mbaud (simulated; a host that answers at once):")
    for what, seconds, share in result["time"]:
        echo(f"    {what}: {seconds:.3f} s ({100 * share:.0f} %)")
    return result


def _main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    config_argument(parser)
    parser.add_argument("--faults", type=float, default=0.0,
                        help="share of the bytes each way flipped or dropped (default 0)")
    parser.add_argument("--images", type=int, default=None,
                        help="run only the first N images (default: all 1797)")
    args = parser.parse_args()
    result = run(config=args.config, faults=args.faults, images=args.images)
    raise SystemExit(0 if result["torch_equal"] == result["onnx_equal"] == result["images"]
                     else 1)

if __name__ == "__main__":
    _main()
