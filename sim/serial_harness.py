"""The simulated board: the chip and its serial link (UART pins included) in Verilator,
bridged to a TCP socket.

:class:`SimulatedBoard` verilates :class:`hw.host_link.LinkedChip` with a
:class:`hw.serial_link.SerialLink` in its slot, together with ``sim/serial_harness.cpp``,
and serves the chip's UART on ``127.0.0.1:<port>``: every byte a host sends is driven onto
the chip's ``rx`` pin as 8N1, ``divisor`` clock cycles per bit, and every byte the chip
sends on ``tx`` comes back, so pyserial's ``socket://127.0.0.1:<port>`` URL lets the
serial backend (:mod:`driver.backends.serial`) talk to it as to a board on a USB UART.

Time
----
A byte is ``10 * divisor`` clock cycles on the line.  The simulated clock is
``baud_rate * divisor``: with the default divisor 4 and 3 Mbaud that is 12 MHz, the
iCEBreaker's clock (the ULX3S runs 48 MHz with divisor 16; the same line, four times as
many chip cycles per byte).  The clock runs only while something happens: when the link
is idle (nothing to send, nothing arriving, the chip idle) the harness waits for the
host without running it, so :attr:`SimulatedBoard.stats` counts the cycles of a host
that answers at once, and ``cycles / clock`` is the run's time on such a host.

Builds
------
One build per (configuration, divisor, link sizes) in ``build/rtl/serial-<key>``, reused
while the digest of the sources, the flags and the tool versions holds: the recipe of
:mod:`sim.compiled_harness`, :func:`sim.verilator_build.build_library`.
"""

import ctypes
import os
import threading
from pathlib import Path

from hw.config import NpuConfig, check_config
from hw.generate import convert_verilog
from hw.uart import check_divisor
from sim.compiled_harness import compiled_problem
from sim.rtl import DEFAULT_BUILD_ROOT, config_key
from sim.verilator_build import build_library, reset_wrapper

__all__ = ["SimulatedBoard", "DEFAULT_DIVISOR", "serial_problem"]

HARNESS_SOURCE = Path(__file__).resolve().with_name("serial_harness.cpp")
#: Clock cycles per bit of the simulated UART (3 Mbaud from 12 MHz).
DEFAULT_DIVISOR = 4
_TOP, _HARNESS_TOP = "linked", "linked_harness"
_STATS = ("cycles", "bytes_in", "bytes_out", "waits", "tx_framing_errors")


def serial_problem():
    """None when the simulated board can be built here, else what is missing."""
    problem = compiled_problem()
    if problem is None and os.name != "posix":
        return "the simulated board's socket bridge needs a POSIX system"
    return problem


def linked_chip_verilog(config, divisor):
    """The Verilog of the chip with a :class:`hw.serial_link.SerialLink` in its slot,
    optimized as the compiled harness's (:func:`hw.generate.convert_verilog`)."""
    from hw.host_link import LinkedChip
    from hw.serial_link import SerialLink
    return convert_verilog(LinkedChip(link=SerialLink(config=config, divisor=divisor)),
                           name=_TOP, optimize=True)


def _load(path):
    library = ctypes.CDLL(str(path))
    handle = ctypes.c_void_p
    signatures = {
        "serial_open": ([ctypes.c_int, ctypes.c_int], handle),
        "serial_port": ([handle], ctypes.c_int),
        "serial_serve": ([handle], ctypes.c_int),
        "serial_stop": ([handle], None),
        "serial_stats": ([handle, ctypes.POINTER(ctypes.c_uint64)], None),
        "serial_close": ([handle], None),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(library, name)
        function.argtypes, function.restype = arguments, result
    return library


def build_board(*, config, divisor, build_root=None):
    """Verilate and compile the simulated board unless a build of the same sources
    exists; the path of its library.

    Raises
    ------
    RuntimeError
        If a tool is missing or the build fails (with the build log's tail).
    """
    problem = serial_problem()
    if problem:
        raise RuntimeError(problem)
    root = Path(build_root) if build_root is not None else DEFAULT_BUILD_ROOT

    def verilog():
        text = linked_chip_verilog(config, divisor)
        return text + "\n" + reset_wrapper(text, toplevel=_TOP, harness_top=_HARNESS_TOP,
                                           inputs_changed=False)

    return build_library(
        build_dir=root / f"serial-{config_key(config)}-d{divisor}",
        settings={"config": config.as_dict(), "divisor": divisor}, verilog=verilog,
        harness_top=_HARNESS_TOP, prefix="Vlinked", harness_source=HARNESS_SOURCE,
        caller=Path(__file__), what="the simulated board")


class SimulatedBoard:
    """The chip and its serial link in Verilator, served on a local TCP port.

    The board runs in a thread of its own from construction until :meth:`close`, and
    serves one host connection after the other; the chip keeps its state between them,
    as a board that stays powered does.

    Parameters
    ----------
    config : NpuConfig
    divisor : int
        Clock cycles per bit (:data:`DEFAULT_DIVISOR`).
    port : int
        The TCP port (0: any free one; :attr:`port` says which).
    build_root : path-like, optional

    Attributes
    ----------
    url : str
        ``socket://127.0.0.1:<port>``, for pyserial's ``serial_for_url`` (and
        ``driver.open("serial", port=url)``).
    """

    def __init__(self, *, config=None, divisor=DEFAULT_DIVISOR, port=0, build_root=None):
        if config is None:
            config = NpuConfig()
        check_config(config)
        self.config = config
        self.divisor = check_divisor(divisor)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise TypeError(f"port must be a TCP port number (0 for any), not {port!r}")
        self.library_path = build_board(config=config, divisor=self.divisor,
                                        build_root=build_root)
        self._lib = _load(self.library_path)
        self._handle = self._lib.serial_open(self.divisor, port)
        if not self._handle:
            raise OSError(f"the simulated board cannot listen on 127.0.0.1:{port}")
        self.port = self._lib.serial_port(self._handle)
        self.url = f"socket://127.0.0.1:{self.port}"
        self.outcome = None
        self._thread = threading.Thread(target=self._serve, name="simulated-board", daemon=True)
        self._thread.start()

    def _serve(self):
        self.outcome = self._lib.serial_serve(self._handle)

    @property
    def stats(self):
        """``cycles`` run, ``bytes_in`` from the host, ``bytes_out`` to it, ``waits`` for
        the host, ``tx_framing_errors`` of the harness's decoder (0 unless the chip's
        UART is broken)."""
        values = (ctypes.c_uint64 * len(_STATS))()
        self._lib.serial_stats(self._handle, values)
        return dict(zip(_STATS, (int(v) for v in values), strict=True))

    def close(self):
        """Stop the board and release it."""
        if self._handle:
            self._lib.serial_stop(self._handle)
            self._thread.join()
            self._lib.serial_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
