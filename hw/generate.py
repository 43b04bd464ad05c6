"""``python -m hw.generate`` — write the Npu's Verilog for a configuration.

Example::

    python -m hw.generate --rows 4 --cols 8 --output build/npu.v
"""

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from .config import NpuConfig

__all__ = ["main", "config_arguments", "config_from_arguments"]


def config_arguments(parser):
    """Add one ``--field`` option per NpuConfig field to ``parser``."""
    defaults = NpuConfig()
    group = parser.add_argument_group("configuration")
    for f in fields(NpuConfig):
        group.add_argument(f"--{f.name.replace('_', '-')}", type=int,
                           default=getattr(defaults, f.name), metavar="N",
                           help=f"(default {getattr(defaults, f.name)})")
    return parser


def config_from_arguments(args):
    """The NpuConfig named by the options :func:`config_arguments` added."""
    return NpuConfig(**{f.name: getattr(args, f.name) for f in fields(NpuConfig)})


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hw.generate",
                                     description=__doc__.split("\n")[0])
    config_arguments(parser)
    parser.add_argument("--output", "-o", type=Path, default=Path("build/npu.v"),
                        help="Verilog file to write (default build/npu.v)")
    args = parser.parse_args(argv)
    try:
        config = config_from_arguments(args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    from sim.rtl import generate_verilog
    text = generate_verilog(config, args.output)
    print(f"wrote {args.output} ({len(text.splitlines())} lines): {config}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
