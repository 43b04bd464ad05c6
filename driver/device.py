"""A chip behind a backend: run layers on it, check its status, count its work."""

import time
from dataclasses import dataclass

import numpy as np

from hw.isa import ClearError, ErrorCode, Opcode

from .backends.base import open_backend
from .layers import HOST_LAYERS, Network, check_chain
from .lowering import HostPass, lower, zero_tile_savings

__all__ = ["open", "Device", "NpuError", "RunStats"]


class NpuError(RuntimeError):
    """The chip reported an error, or sent back something the driver did not expect.

    Attributes
    ----------
    code : ErrorCode or int or None
        The chip's sticky error code.
    opcode : Opcode or int or None
        The opcode of the command that raised it.
    layer : str or None
        The layer whose pass failed.
    """

    def __init__(self, message, *, code=None, opcode=None, layer=None):
        super().__init__(message)
        self.code, self.opcode, self.layer = code, opcode, layer


@dataclass
class RunStats:
    """What the last :meth:`Device.run` did."""
    layers: int = 0
    macs: int = 0
    #: Chip cycles summed over every pass; None when a backend has no cycle count.
    cycles: int | None = 0
    cycles_measured: bool = True
    calls: int = 0
    seconds: float = 0.0
    array_size: int = 1
    #: Weight tiles skipped as all zero (summed over passes).
    skipped_tiles: int = 0
    #: Cycles the skipped tiles saved, from the cycle model (summed over passes).
    cycles_saved: int = 0

    @property
    def utilization(self):
        """Useful MACs over the array's MAC capacity during the counted cycles (None if unknown)."""
        if not self.cycles:
            return None
        return self.macs / (self.cycles * self.array_size)


def _opcode_name(opcode):
    return Opcode(opcode).name if opcode in tuple(Opcode) else str(opcode)


class Device:
    """A chip reached through a :class:`~driver.backends.base.Backend`.

    Use :func:`driver.open` to make one.  The driver lowers layers to command
    streams and hands them to the backend; it never knows which backend it talks to.
    """

    def __init__(self, backend):
        self.backend = backend
        self.config = backend.config
        self.stats = RunStats(array_size=self.config.rows * self.config.cols)
        self._programs = {}

    @property
    def name(self):
        return self.backend.name

    def close(self):
        self.backend.close()

    def reset(self):
        """Reset the chip (``RESET_STATE`` in :mod:`hw.isa`): errors, parameter sets,
        counters and work in flight cleared, buffers kept.  :meth:`run` resets it itself
        after a timeout; every pass loads what it uses, so runs go on as before."""
        self.backend.reset()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<driver.Device {self.name!r} {self.config}>"

    def program(self, layers, batch):
        """The :class:`~driver.lowering.LoweredChain` that runs ``layers`` over ``batch`` rows."""
        layers = check_chain(layers.layers if isinstance(layers, Network) else layers)
        key = (tuple(id(layer) for layer in layers), batch)
        if key not in self._programs:
            self._programs[key] = (layers, lower(layers, batch=batch, config=self.config))
        return self._programs[key][1]

    def run(self, layers, x, *, rows_per_call=None, progress=None):
        """Run a layer, a chain of layers or a :class:`~driver.layers.Network` on ``x``.

        Parameters
        ----------
        layers : QuantLinear, list of layers or Network
        x : numpy.ndarray [batch, in_features] (or [in_features])
            Quantized input of the first layer's input type (uint8 or int8).
        rows_per_call : int, optional
            Send the batch in slices of this many rows (for progress reporting);
            default: the whole batch in one call per layer.
        progress : callable, optional
            Called as ``progress(done, total)`` after each backend call.

        Returns
        -------
        numpy.ndarray
            The last layer's quantized output, [batch, out_features] (or [out_features]).

        Raises
        ------
        TypeError
            If ``layers`` are not layers, ``x`` is not an array of the first layer's input
            type, ``rows_per_call`` is not an integer or ``progress`` is not callable.
        ValueError
            If the shape of ``x`` is not the first layer's input, or ``rows_per_call`` is
            not positive.
        NpuError
            If the chip reports an error (the message decodes the error code; the error
            is cleared) or makes no progress (the chip is reset); the device serves the
            next run either way.
        """
        layers = check_chain(layers.layers if isinstance(layers, Network) else layers)
        first = layers[0]
        if rows_per_call is not None and (isinstance(rows_per_call, (bool, np.bool_))
                                          or not isinstance(rows_per_call, (int, np.integer))):
            raise TypeError(f"rows_per_call must be a positive integer, not {rows_per_call!r}")
        if rows_per_call is not None and rows_per_call <= 0:
            raise ValueError(f"rows_per_call must be a positive integer, not {rows_per_call!r}")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, not {progress!r}")
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a NumPy array, not {type(x).__name__}")
        if x.dtype != first.input.qtype.dtype:
            raise TypeError(f"{first.name} takes {first.input.qtype.value} input, not {x.dtype}; "
                            "quantize it first (Network.quantize)")
        vector = x.ndim == 1
        x2 = x.reshape(1, -1) if vector else x
        if x.ndim > 2 and tuple(x.shape[1:]) == tuple(first.input_shape):
            x2 = x.reshape(x.shape[0], -1)      # images [batch, C, H, W]
        if x2.ndim != 2 or x2.shape[1] != first.in_features or x2.shape[0] == 0:
            raise ValueError(f"{first.name} takes input [batch, {first.in_features}], "
                             f"not {list(x.shape)}")
        batch = x2.shape[0]
        step = batch if rows_per_call is None else int(rows_per_call)
        slices = [(start, min(step, batch - start)) for start in range(0, batch, step)]
        self.stats = RunStats(array_size=self.config.rows * self.config.cols)
        started = time.perf_counter()
        total, done = len(layers) * len(slices), 0
        activations = x2
        for index, layer in enumerate(layers):
            out = np.empty((batch, layer.out_features), dtype=layer.output_dtype)
            for start, rows in slices:
                part = activations[start:start + rows]
                if isinstance(layer, HOST_LAYERS):
                    out[start:start + rows] = layer.apply(part)
                else:
                    out[start:start + rows] = self._run_pass(layers, index, part)
                done += 1
                if progress is not None:
                    progress(done, total)
            activations = out
        self.stats.layers = sum(not isinstance(layer, HOST_LAYERS) for layer in layers)
        self.stats.seconds = time.perf_counter() - started
        return activations.reshape(-1) if vector else activations

    def _savings(self, chip_pass):
        key = ("savings", id(chip_pass))
        if key not in self._programs:
            self._programs[key] = (chip_pass, zero_tile_savings(chip_pass))
        return self._programs[key][1]

    def _run_pass(self, layers, index, x):
        batch = x.shape[0]
        chip_pass = self.program(layers, batch).passes[index]
        assert not isinstance(chip_pass, HostPass)
        layer = layers[index]
        name = chip_pass.layer.name
        try:
            result = self.backend.execute(chip_pass.commands,
                                          chip_pass.data_in(layer.to_rows(x)))
        except TimeoutError as exc:
            self.reset()
            raise NpuError(f"{name}: the chip made no progress ({exc}); it was reset",
                           layer=name) from exc
        self.stats.calls += 1
        self.stats.macs += layer.macs(batch)
        if chip_pass.skipped:
            self.stats.skipped_tiles += len(chip_pass.skipped)
            self.stats.cycles_saved += self._savings(chip_pass)
        if result.cycles is None or self.stats.cycles is None:
            self.stats.cycles = None
        else:
            self.stats.cycles += result.cycles
            self.stats.cycles_measured &= bool(result.cycles_measured)
        status = chip_pass.status(result.data_out)
        if status is None:
            status = result.status
        if status.error != ErrorCode.NONE:
            # Clear the sticky error so the device stays usable after the exception.
            self.backend.execute([ClearError().encode()])
            code = status.error_code
            text = code.description if isinstance(code, ErrorCode) else "an unknown error code"
            raise NpuError(f"{name}: the chip raised {getattr(code, 'name', code)} ({text}) "
                           f"at a {_opcode_name(status.error_opcode)} command",
                           code=code, opcode=status.error_opcode, layer=name)
        if len(result.data_out) != chip_pass.data_out_bytes:
            raise NpuError(f"{name}: the chip sent {len(result.data_out)} data-out bytes, "
                           f"the program expects {chip_pass.data_out_bytes}", layer=name)
        return layer.from_rows(chip_pass.decode(result.data_out), batch)


def open(name="golden", config=None, **options):
    """Open a chip on the backend ``name`` ("golden", "verilator", "icarus", "amaranth",
    "serial": a board over its serial link, ``port=`` its device or a pyserial URL).

    Parameters
    ----------
    name : str
    config : NpuConfig, optional
    **options
        Passed to the backend (for example ``trace="run.fst"`` on the RTL backends).

    Returns
    -------
    Device
        Also a context manager that closes the backend.

    Raises
    ------
    driver.backends.BackendUnavailable
        If the backend cannot start here; the message says what to install.
    """
    return Device(open_backend(name, config=config, **options))
