"""The one configuration of the matrix unit.

Every size in the hardware, the golden model, the cycle model and the driver is
either a field of :class:`NpuConfig` or derived from one here.  Nothing else in
the project hard-codes an array size, a buffer depth or a stream width.
"""

from dataclasses import asdict, dataclass, fields
from functools import cache
from math import ceil
from numbers import Integral

__all__ = ["NpuConfig", "check_config", "parse_config", "OPERAND_WIDTH", "ACC_WIDTH",
           "COMMAND_WIDTH", "PARAM_RECORD_BYTES", "STATUS_RECORD_BYTES"]

#: Width of a processing-element operand: a 9-bit signed value holds uint8, int8 and
#: ``uint8 - zero_point`` exactly, so every weight scheme runs on one multiplier.
OPERAND_WIDTH = 9
#: Width of the accumulator (int32, as in every quantized framework).
ACC_WIDTH = 32
#: Width of one command word.
COMMAND_WIDTH = 64
#: Bytes of one per-column requantization record on the data stream.
PARAM_RECORD_BYTES = 16
#: Bytes of the record that ``READ_STATUS`` writes to the output stream.
STATUS_RECORD_BYTES = 8

#: Largest array side (operands) and stream width (bytes): a design limit, well inside
#: the ISA fields that carry sizes.
_MAX_SIDE = 256


@cache
def _addressable():
    """The buffer sizes the ISA's address and slot fields can address in full.

    ``hw/isa.py`` imports this module for its constants, so the ISA is looked up only
    when the first configuration is checked, after both modules are loaded.
    """
    from .isa import addressable_limits
    return addressable_limits()


def _check_positive(name, value, limit):
    """``value`` as an int; any integer type (a NumPy one too), but never a bool."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value <= 0:
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if value > limit:
        raise ValueError(f"{name} must be at most {limit}, not {value!r}")
    return int(value)


@dataclass(frozen=True, kw_only=True)
class NpuConfig:
    """Configuration of one matrix unit.

    Parameters
    ----------
    rows : int
        Rows of the systolic array: the reduction (K) depth of one tile.
    cols : int
        Columns of the systolic array: the output features (N) of one tile.
    act_depth : int
        Activation buffer depth, in vectors of ``rows`` operands.  Also the largest
        number of rows (M) one ``MATMUL`` streams through the array.
    weight_tiles : int
        Weight buffer depth, in whole ``rows`` x ``cols`` tiles.
    acc_depth : int
        Accumulator depth, in rows of ``cols`` int32 values.
    data_bytes : int
        Width of the data-in and data-out streams, in bytes per beat.
    requant_lanes : int, optional
        Columns the requantizer computes side by side (four multiplier DSPs each); a row
        of ``n`` columns occupies them :meth:`requant_cycles` cycles.  At most ``cols``;
        by default ``min(cols, data_bytes)``, as many as a data-out beat of requantized
        bytes carries, so the requantizer keeps up with the port.  Resolved when the
        configuration is made: :func:`dataclasses.replace` keeps it as it is.

    Raises
    ------
    TypeError
        If a field is not a positive integer.
    ValueError
        If a field exceeds what the instruction set can address, or ``requant_lanes``
        exceeds ``cols``.
    """

    rows: int = 8
    cols: int = 8
    act_depth: int = 512
    weight_tiles: int = 4
    acc_depth: int = 512
    data_bytes: int = 8
    requant_lanes: int = None

    def __post_init__(self):
        limits = {**_addressable(), "rows": _MAX_SIDE, "cols": _MAX_SIDE,
                  "data_bytes": _MAX_SIDE}
        for f in fields(self):
            if f.name == "requant_lanes":
                continue
            # Stored as a plain int, so equal configurations hash and print alike.
            object.__setattr__(self, f.name,
                               _check_positive(f.name, getattr(self, f.name), limits[f.name]))
        lanes = self.requant_lanes
        if lanes is None:
            lanes = self.default_requant_lanes
        elif not isinstance(lanes, Integral) or isinstance(lanes, bool) or lanes <= 0:
            raise TypeError(f"requant_lanes must be a positive integer, not {lanes!r}")
        elif lanes > self.cols:
            raise ValueError(f"requant_lanes must be at most cols ({self.cols}), not {lanes!r}")
        object.__setattr__(self, "requant_lanes", int(lanes))

    # -- derived constants ---------------------------------------------------------------

    @property
    def data_width(self):
        """Width of a data stream beat in bits."""
        return 8 * self.data_bytes

    @property
    def weight_depth(self):
        """Weight buffer depth in rows of ``cols`` operands."""
        return self.weight_tiles * self.rows

    @property
    def vector_bytes(self):
        """Longest vector the data-in deserializer assembles, in bytes."""
        return max(self.rows, self.cols, PARAM_RECORD_BYTES)

    @property
    def out_vector_bytes(self):
        """Longest vector the data-out serializer sends, in bytes."""
        return max(self.cols * ACC_WIDTH // 8, STATUS_RECORD_BYTES)

    @property
    def array_latency(self):
        """Enabled cycles from an activation vector entering the array to its result row.

        Row ``r`` waits ``r`` cycles of input skew and the activation moves one cell
        right per cycle, so it reaches cell ``(r, c)`` after ``r + c``; the bottom cell
        of column ``c`` puts out its partial sum ``PE_LATENCY`` (``hw/pe.py``) cycles
        after that, and the deskew delays column ``c`` by ``cols - 1 - c`` more:
        ``rows + cols - 2 + PE_LATENCY`` for every column.
        """
        from .pe import PE_LATENCY  # hw/pe.py imports this module for its widths
        return self.rows + self.cols - 2 + PE_LATENCY

    @property
    def default_requant_lanes(self):
        """``requant_lanes`` when it is not given: ``min(cols, data_bytes)``."""
        return min(self.cols, self.data_bytes)

    def requant_cycles(self, n):
        """Cycles a requantized row of ``n`` columns occupies the requantizer's lanes."""
        return ceil(n / self.requant_lanes)

    @property
    def weight_hold(self):
        """Enabled cycles after an activation vector enters the array in which its weight
        bank must not change: ``rows + cols - 1``.

        Cell ``(r, c)`` registers the weight it multiplies with ``r + c`` cycles after
        the vector entered (``hw/pe.py``), the last cell after ``rows + cols - 2``;
        from then on the bank may take the next tile, while the vector's products and
        sums are still on their way down (one cycle of margin more).
        """
        return self.rows + self.cols - 1

    def beats(self, nbytes):
        """Data-stream beats that carry a vector of ``nbytes`` bytes (padded to a beat)."""
        return ceil(nbytes / self.data_bytes)

    def as_dict(self):
        return asdict(self)

    @property
    def spec(self):
        """The fields that differ from the default, as :func:`parse_config` reads them
        (``"rows=4,cols=4"``; empty for the default configuration)."""
        default = {**NpuConfig().as_dict(), "requant_lanes": self.default_requant_lanes}
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name) != default[f.name])

    def __str__(self):
        return (f"{self.rows}x{self.cols} array, act {self.act_depth}, "
                f"weights {self.weight_tiles} tiles, acc {self.acc_depth}, "
                f"{self.data_bytes}-byte streams, {self.requant_lanes} requantizer lanes")


def check_config(config):
    """``config`` itself if it is an :class:`NpuConfig`.

    Raises
    ------
    TypeError
        Otherwise, naming what was passed.
    """
    if not isinstance(config, NpuConfig):
        raise TypeError(f"config must be an NpuConfig, not {config!r}")
    return config


def parse_config(text):
    """An :class:`NpuConfig` from ``"rows=4,cols=4,..."``; empty or None: the default.

    The one configuration syntax of every command line and make target
    (``--config rows=4,cols=4``, ``make verilog CONFIG=rows=4,cols=4``).

    Raises
    ------
    ValueError
        If an item is not ``name=integer`` with a field name of :class:`NpuConfig`, or a
        value is out of range; the message names the item.
    """
    if text is None or not str(text).strip():
        return NpuConfig()
    names = [f.name for f in fields(NpuConfig)]
    values = {}
    for item in str(text).split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ValueError(f"configuration item {item.strip()!r} must be name=value with a "
                             f"name of {', '.join(names)}")
        if key in values:
            raise ValueError(f"configuration item {key!r} is given twice")
        try:
            values[key] = int(value)
        except ValueError:
            raise ValueError(f"configuration item {key!r} must be an integer, "
                             f"not {value.strip()!r}") from None
    try:
        return NpuConfig(**values)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
