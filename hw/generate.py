"""``python -m hw.generate`` — write the Npu's Verilog for a configuration.

Example::

    python -m hw.generate --config rows=4,cols=8 --output build/npu.v
"""

import argparse
import sys
from pathlib import Path

from .config import NpuConfig, parse_config

__all__ = ["TOPLEVEL", "OPTIMIZE_SCRIPT", "convert_verilog", "generate_verilog", "config_argument",
           "main"]

#: Module name of the generated top level.
TOPLEVEL = "npu"


#: The Yosys passes between Amaranth's RTLIL and the optimized Verilog: processes to
#: multiplexers, then ``opt`` (constant folding, shared logic merged, unused wires and
#: cells removed, and flip-flops given their enable and synchronous reset, so a simulator
#: updates a register only when it loads), memories collected as Amaranth's own
#: conversion does.
OPTIMIZE_SCRIPT = ("hierarchy -top {top}", "proc -norom", "opt", "memory_collect",
                   "write_verilog -norename")


def convert_verilog(component, *, name, optimize=False):
    """``component`` as Verilog text with top module ``name``.

    With ``optimize`` the netlist passes through Yosys' ``opt`` (:data:`OPTIMIZE_SCRIPT`)
    before it is written: the same logic, a seventh of the text, and registers written as
    enabled flip-flops, which Verilator builds several times faster and simulates about a
    fifth faster.
    """
    from amaranth.back import rtlil, verilog

    if not isinstance(optimize, bool):
        raise TypeError(f"optimize must be a bool, not {optimize!r}")
    if not optimize:
        return verilog.convert(component, name=name, emit_src=False)
    from amaranth._toolchain.yosys import find_yosys

    il_text = rtlil.convert(component, name=name, emit_src=False)
    script = [f"read_rtlil <<rtlil\n{il_text}\nrtlil",
              *(step.format(top=name) for step in OPTIMIZE_SCRIPT)]
    # The Yosys Amaranth itself runs (its version requirement, its warnings squashed:
    # write_verilog warns about processes on every design).
    yosys = find_yosys(lambda version: version >= (0, 40))
    return yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)


def generate_verilog(config, path=None, *, optimize=False):
    """The Npu for ``config`` as Verilog text (also written to ``path`` if given).

    ``optimize``: see :func:`convert_verilog`.  ``sim/compiled_harness.py`` and the
    simulated board (``sim/serial_harness.py``) use the optimized netlist; the cocotb path
    keeps Amaranth's own Verilog, so the equality tests compare the two.
    """
    from .npu import Npu
    text = convert_verilog(Npu(config=config), name=TOPLEVEL, optimize=optimize)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text


def _config_type(text):
    try:
        return parse_config(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def config_argument(parser, *, default=None):
    """Add the ``--config rows=4,cols=4,...`` option (:func:`hw.config.parse_config`)."""
    names = ", ".join(NpuConfig.__dataclass_fields__)
    parser.add_argument("--config", type=_config_type,
                        default=NpuConfig() if default is None else default,
                        metavar="NAME=N,...",
                        help=f"chip configuration: comma-separated {names} "
                             f"(default: {NpuConfig()})")
    return parser


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.generate",
                                     description=__doc__.split("\n")[0])
    config_argument(parser)
    parser.add_argument("--output", "-o", type=Path, default=Path("build/npu.v"),
                        help="Verilog file to write (default build/npu.v)")
    parser.add_argument("--optimize", action="store_true",
                        help="pass the netlist through Yosys' opt first (as the compiled "
                             "Verilator harness does)")
    args = parser.parse_args(argv)
    text = generate_verilog(args.config, args.output, optimize=args.optimize)
    print(f"wrote {args.output} ({len(text.splitlines())} lines): {args.config}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
