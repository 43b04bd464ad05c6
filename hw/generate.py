"""``python -m hw.generate`` — write the Npu's Verilog for a configuration.

Example::

    python -m hw.generate --config rows=4,cols=8 --output build/npu.v
"""

import argparse
import sys
from pathlib import Path

from .config import NpuConfig, parse_config

__all__ = ["TOPLEVEL", "generate_verilog", "config_argument", "main"]

#: Module name of the generated top level.
TOPLEVEL = "npu"


def generate_verilog(config, path=None):
    """The Npu for ``config`` as Verilog text (also written to ``path`` if given)."""
    from amaranth.back import verilog

    from .npu import Npu
    text = verilog.convert(Npu(config=config), name=TOPLEVEL, emit_src=False)
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
    args = parser.parse_args(argv)
    text = generate_verilog(args.config, args.output)
    print(f"wrote {args.output} ({len(text.splitlines())} lines): {args.config}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
