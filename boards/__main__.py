"""``python -m boards BOARD`` — build a board's bitstream (the self-test, or the serial
link for the serial backend) and its report.

Example::

    python -m boards ulx3s --config rows=4,cols=4 --freq 40 --output build/ulx3s
    python -m boards icebreaker --link serial
"""

import argparse
import sys
from pathlib import Path

from hw.generate import config_argument

from . import BOARDS
from .build import LINKS, build_bitstream


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m boards", description=__doc__.split("\n")[0])
    parser.add_argument("board", choices=sorted(BOARDS))
    config_argument(parser, default=False)
    parser.add_argument("--freq", type=float, default=None,
                        help="target clock in MHz (default: the board's)")
    parser.add_argument("--output", type=Path, default=None,
                        help="build folder (default build/<board>)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed")
    parser.add_argument("--link", choices=LINKS, default="self-test",
                        help="the host link: the self-test (default) or the serial link")
    args = parser.parse_args(argv)
    board = BOARDS[args.board]
    config = args.config or None
    try:
        report = build_bitstream(board, config=config, frequency_mhz=args.freq,
                                 output=args.output, seed=args.seed, link=args.link,
                                 log=lambda line: print(line, file=sys.stderr))
    except ValueError as exc:
        parser.error(str(exc))
    output = args.output or Path("build") / board.name
    print((output / "report.md").read_text())
    if not report["fits"]:
        print(f"{board.name}: the design does not fit ({board.fits})", file=sys.stderr)
        return 2
    if not report["meets_timing"]:
        print(f"{board.name}: timing not met: {report.get('fmax_mhz')} MHz < "
              f"{report['target_mhz']} MHz", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
