"""The ``npu`` command line: run quantized ONNX models on the chip, disassemble, inspect.

A model takes and returns what onnxruntime gives it: float32 for a model that quantizes
its input and dequantizes its output, the integer tensors themselves for a model whose
input or output is uint8/int8/int32.

::

    npu run MODEL.onnx --input X.npy --output Y.npy [--backend golden|verilator|icarus|amaranth]
    npu run MODEL.onnx --input X.npy --output Y.npy --backend serial --port /dev/ttyUSB0
    npu disasm MODEL.onnx [--batch N]
    npu info
"""

import argparse
import os
import sys
import time

import numpy as np

from hw.generate import config_argument

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is in ``--help``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text):
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value <= 0:
        shown = text if value is not None else repr(text)
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {shown}")
    return value


def _parser():
    parser = _Parser(prog="npu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a quantized ONNX model on .npy input")
    run.add_argument("model", help="quantized ONNX model")
    run.add_argument("--input", required=True,
                     help=".npy input [batch, ...] of the model's input type (float32, or "
                          "uint8/int8 for a model with an integer input)")
    run.add_argument("--output", required=True,
                     help=".npy output to write, of the model's output type")
    run.add_argument("--backend", default="golden",
                     help="golden, verilator, icarus, amaranth or serial (default: golden)")
    run.add_argument("--port", help="serial backend: the board's serial device "
                                    "(/dev/ttyUSB0) or a pyserial URL (socket://host:port)")
    run.add_argument("--baudrate", type=_positive, default=None,
                     help="serial backend: the line's baud rate (default 3000000)")
    config_argument(run)
    run.add_argument("--trace", metavar="FILE",
                     help="write a waveform (.fst or .vcd) from an RTL backend")
    run.add_argument("--rows-per-call", type=_positive, default=None,
                     help="batch rows per backend call (default: chosen for progress reporting)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    disasm = sub.add_parser("disasm", help="print the command stream of a model")
    disasm.add_argument("model", help="quantized ONNX model")
    disasm.add_argument("--batch", type=_positive, default=1,
                        help="batch rows (default: 1)")
    config_argument(disasm)

    info = sub.add_parser("info", help="print the configuration and the backends available")
    config_argument(info)
    return parser


def _where(layer):
    from driver.layers import HOST_LAYERS
    return "host" if isinstance(layer, HOST_LAYERS) else "chip"


def _summary_rows(network, stats, backend, wall):
    cycles = "n/a" if stats.cycles is None else (
        f"{stats.cycles:,}" + ("" if stats.cycles_measured else " (cycle model)"))
    utilization = stats.utilization
    placed = [(f"  {layer.name}", f"{type(layer).__name__} on the {_where(layer)}"
               + (" (im2col on the host)" if getattr(layer, "geometry", None) is not None
                  and _where(layer) == "chip" else ""))
              for layer in network.layers]
    return [
        ("backend", backend),
        ("layers on the chip", str(stats.layers)),
        ("layers on the host", str(len(network.layers) - stats.layers)),
        *placed,
        ("zero weight tiles skipped", str(stats.skipped_tiles)),
        ("cycles saved by skipping", f"{stats.cycles_saved:,} (cycle model)"),
        ("MACs", f"{stats.macs:,}"),
        ("chip cycles", cycles),
        ("array utilization", "n/a" if utilization is None else f"{100 * utilization:.1f} %"),
        ("backend calls", str(stats.calls)),
        ("wall time", f"{wall:.2f} s"),
    ]


def _print_table(console, title, rows):
    from rich.table import Table
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _cmd_run(args, console):
    import driver
    options = {"trace": args.trace} if args.trace is not None else {}
    if args.backend == "serial":
        if args.port is None:
            raise ValueError("--backend serial needs --port (the board's serial device, "
                             "e.g. /dev/ttyUSB0, or a pyserial URL)")
        options["port"] = args.port
        if args.baudrate is not None:
            options["baudrate"] = args.baudrate
    elif args.port is not None or args.baudrate is not None:
        raise ValueError(f"--port and --baudrate are for --backend serial, not {args.backend}")
    _check_output(args.output)
    network = driver.load_onnx(args.model)
    x_q = model_input(network, load_input(args.input))
    rows = args.rows_per_call or max(1, min(len(x_q), 256))
    started = time.perf_counter()
    with driver.open(args.backend, config=args.config, **options) as npu:
        if args.quiet:
            y_q = npu.run(network, x_q, rows_per_call=rows)
        else:
            from rich.progress import Progress
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"{args.backend}: {len(network)} layers", total=None)
                y_q = npu.run(network, x_q, rows_per_call=rows,
                              progress=lambda done, total: progress.update(
                                  task, completed=done, total=total))
        stats = npu.stats
    if network.float_output:
        y_q = network.dequantize(y_q)
    with open(args.output, "wb") as f:     # the name given, without a ".npy" added
        np.save(f, y_q.reshape(len(y_q), *network.output_shape))
    if not args.quiet:
        _print_table(console, f"npu run {args.model}",
                     _summary_rows(network, stats, args.backend, time.perf_counter() - started))
    return 0


def load_input(path):
    """The array in the ``.npy`` file ``path`` (numbers, not pickled objects).

    Raises
    ------
    OSError
        If the file cannot be read.
    ValueError
        If it is not a ``.npy`` array of numbers; the message names the file.
    """
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PK\x03\x04"):
        raise ValueError(f"--input {path} is a .npz archive; save the one input array with "
                         "numpy.save")
    if magic != b"\x93NUMPY":
        raise ValueError(f"--input {path} is not a .npy array (numpy.save writes one)")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"--input {path} holds Python objects, not numbers; save a "
                             "numeric array") from None
        raise ValueError(f"--input {path} is not a .npy array ({exc})") from None
    except EOFError as exc:
        raise ValueError(f"--input {path} is not a .npy array (truncated: {exc})") from None
    if x.dtype.kind not in "biuf":
        raise ValueError(f"--input {path} holds {x.dtype} values, not numbers")
    return x


def _check_output(path):
    """Refuse an output path that cannot be written, before anything runs."""
    if os.path.isdir(path):
        raise ValueError(f"--output {path} is a directory; give the .npy file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--output {path}: no such directory {folder}")


def model_input(network, x):
    """``x`` checked against the model's input and made the chain's first input:
    quantized by the model's own quantizer (float models) or passed through as it is
    (integer models), as ``[batch, features]``.

    Raises
    ------
    TypeError
        If ``x`` has another dtype than the model takes.
    ValueError
        If its shape is not the model's input shape.
    """
    expected = "[" + ", ".join(map(str, [network.batch or "batch", *network.input_shape])) + "]"
    if x.ndim == len(network.input_shape):
        x = x[None]
    if tuple(x.shape[1:]) != network.input_shape or len(x) == 0 or (
            network.batch is not None and len(x) != network.batch):
        raise ValueError(f"the input must be {expected}, not shape {list(x.shape)}")
    if network.float_input:
        if x.dtype.kind != "f":
            raise TypeError(f"the model takes float32 input {expected}, not {x.dtype}")
        return network.quantize(x.astype(np.float32).reshape(len(x), -1))
    if x.dtype != network.input_dtype:
        raise TypeError(f"the model takes {network.input_dtype} input {expected} (its input is "
                        f"an integer tensor, passed as it is), not {x.dtype}")
    return x.reshape(len(x), -1)


def _cmd_disasm(args, console):
    import driver
    network = driver.load_onnx(args.model)
    program = driver.lower(network.layers, batch=args.batch, config=args.config)
    print(program.disassemble())
    return 0


def _cmd_info(args, console):
    import driver
    config = args.config
    _print_table(console, "configuration",
                 [(name, str(value)) for name, value in config.as_dict().items()]
                 + [("array latency (cycles)", str(config.array_latency))])
    from rich.table import Table
    table = Table(title="backends")
    table.add_column("backend", style="bold")
    table.add_column("status")
    for name, reason in driver.available_backends().items():
        table.add_row(name, "available" if reason is None else f"unavailable: {reason}")
    console.print(table)
    return 0


#: Set in the environment, an unexpected exception in ``npu`` shows its traceback.
TRACEBACK_VARIABLE = "NPU_TRACEBACK"


def main(argv=None):
    """Entry point of the ``npu`` command; returns the exit status."""
    from rich.console import Console
    args = _parser().parse_args(argv)
    console = Console(stderr=True) if args.command == "run" else Console()
    import driver
    try:
        return {"run": _cmd_run, "disasm": _cmd_disasm, "info": _cmd_info}[args.command](
            args, console)
    except (driver.BackendUnavailable, driver.NpuError, driver.QuantizationError, ValueError,
            TypeError, OSError) as exc:
        print(f"npu {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a command line prints one line, never a traceback
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        print(f"npu {args.command}: internal error, please report it with the traceback "
              f"{TRACEBACK_VARIABLE}=1 shows: {type(exc).__name__}: {_one_line(exc)}",
              file=sys.stderr)
        return 1


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
