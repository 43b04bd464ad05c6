"""Bitstreams for FPGA boards: board facts, the self-test program, the build and its report.

This layer sits above ``driver``: the self-test top (``hw/self_test.py``) takes its
program and expected bytes as arguments, made here from the driver's lowering and the
golden model.  ``python -m boards ulx3s`` (``make bitstream BOARD=ulx3s``) builds one.
"""

from . import icebreaker, ulx3s
from .board import Board

__all__ = ["Board", "BOARDS", "board"]

#: Every board by name.
BOARDS = {b.name: b for b in (ulx3s.BOARD, icebreaker.BOARD)}


def board(name):
    """The :class:`Board` called ``name``; ValueError naming the boards otherwise."""
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]
