"""The backend interface and the registry of backends."""

import importlib
import os

from hw.config import NpuConfig, check_config

__all__ = ["Backend", "SimulatorBackend", "BackendUnavailable", "BACKENDS", "open_backend",
           "available_backends"]


class BackendUnavailable(RuntimeError):
    """A backend cannot start: the message says what is missing and how to install it."""


class Backend:
    """A device that executes command streams.

    Subclasses set ``name`` and implement :meth:`_execute` and :meth:`_reset`;
    :meth:`close` releases any simulator.  A backend keeps the chip's state (buffers,
    parameters, error) between :meth:`execute` calls, as a real chip would, until
    :meth:`reset`.
    """

    name = None

    def __init__(self, *, config=None, **options):
        if config is None:
            config = NpuConfig()
        check_config(config)
        self.config = config
        #: Why the chip waits (a run that timed out) until :meth:`reset`; else None.
        self.stalled = None

    def execute(self, commands, data_in=b""):
        """Run ``commands`` (64-bit words) against ``data_in`` (whole data-stream beats).

        Returns
        -------
        sim.run_result.RunResult
            The data-out bytes, the status and the cycles (measured on the RTL, or the
            cycle model's count where the backend has no clock: ``cycles_measured``).

        Raises
        ------
        TimeoutError
            If the chip made no progress, for example because ``data_in`` ended in the
            middle of a command: the chip then waits, and takes nothing else, until
            :meth:`reset`.
        RuntimeError
            If the chip still waits after an earlier timeout.
        """
        if self.stalled is not None:
            raise RuntimeError(f"the {self.name} chip made no progress in an earlier run "
                               f"({self.stalled}): reset() it first")
        try:
            return self._execute(commands, data_in)
        except TimeoutError as exc:
            self.stalled = str(exc)
            raise

    def reset(self):
        """Reset the chip: error, parameter sets, counters and work in flight cleared, the
        buffers kept (``RESET_STATE`` in :mod:`hw.isa`).  It recovers a chip that waits
        for data, timed out or latched an error."""
        self._reset()
        self.stalled = None

    def _execute(self, commands, data_in):
        raise NotImplementedError

    def _reset(self):
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @classmethod
    def check_available(cls):
        """Raise :class:`BackendUnavailable` if this backend cannot run here."""


class SimulatorBackend(Backend):
    """A backend over a simulator session that keeps one chip alive.

    Subclasses open ``self._session`` (anything with ``run(commands, data_in,
    stall_probability=, seed=)`` returning a :class:`~sim.run_result.RunResult`,
    ``reset()`` and ``close()``) in their constructor.
    """

    def __init__(self, *, config=None, stall_probability=0.0, seed=0, max_idle_cycles=100_000):
        super().__init__(config=config)
        if isinstance(stall_probability, bool) or not isinstance(
                stall_probability, (int, float)) or not 0 <= stall_probability < 1:
            raise (ValueError if isinstance(stall_probability, (int, float)) else TypeError)(
                f"stall_probability must be a number in [0, 1), not {stall_probability!r}")
        self.stall_probability = float(stall_probability)
        self.seed = seed
        self.max_idle_cycles = max_idle_cycles
        self._session = None
        self._runs = 0

    def _execute(self, commands, data_in):
        self._runs += 1
        return self._session.run(commands, data_in, stall_probability=self.stall_probability,
                                 seed=self.seed + self._runs,
                                 max_idle_cycles=self.max_idle_cycles)

    def _reset(self):
        self._session.reset()

    def close(self):
        if self._session is not None:
            self._session.close()
            self._session = None


#: Backend name -> "module:Class", imported on first use so that a missing simulator
#: only matters to the backend that needs it.
BACKENDS = {
    "golden": "driver.backends.golden:GoldenBackend",
    "verilator": "driver.backends.rtl:VerilatorBackend",
    "icarus": "driver.backends.rtl:IcarusBackend",
    "amaranth": "driver.backends.amaranth:AmaranthBackend",
    "serial": "driver.backends.serial:SerialBackend",
}


def _backend_class(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {exc}") from exc


def open_backend(name, *, config=None, **options):
    """Open the backend called ``name`` ("golden", "verilator", "icarus", "amaranth",
    "serial").

    Raises
    ------
    ValueError
        If ``name`` is not a backend, or an option is one the backend cannot honour.
    TypeError
        If an option has the wrong type (``trace`` must be a path) or the backend does not
        take it.
    BackendUnavailable
        If the backend cannot run here.
    """
    trace = options.get("trace")
    if trace is not None:
        if not isinstance(trace, (str, os.PathLike)):
            raise TypeError(f"trace must be a path (str or os.PathLike) or None, not {trace!r}")
        if not os.fspath(trace):
            raise ValueError("trace must be a file name, not ''")
        folder = os.path.dirname(os.path.abspath(os.fspath(trace)))
        if not os.path.isdir(folder):
            raise ValueError(f"trace {os.fspath(trace)!r}: no such directory {folder!r}")
    cls = _backend_class(name)
    cls.check_available()
    return cls(config=config, **options)


def available_backends():
    """``{name: None or the reason it is unavailable}`` for every backend."""
    result = {}
    for name in BACKENDS:
        try:
            _backend_class(name).check_available()
            result[name] = None
        except BackendUnavailable as exc:
            result[name] = str(exc)
    return result
