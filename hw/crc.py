"""Cyclic redundancy checks: the algorithm in Python and a byte-wide update in gateware.

:class:`CrcAlgorithm` describes a CRC in the parameters of the Rocksoft model, as the
CRC catalogue of ``reveng`` lists them (width, polynomial, initial value, reflection,
final XOR, check value), and computes it in Python from a 256-entry table.  A CRC is
linear over GF(2): the register after one byte is a fixed XOR of register bits and data
bits.  :meth:`CrcAlgorithm.update_matrix` derives that XOR from the Python update itself,
by feeding it one set bit at a time, and :class:`Crc` builds the gateware from it, so the
Python CRC and the gateware cannot disagree on the polynomial or on a bit order.
"""

import operator
from dataclasses import dataclass
from functools import cached_property, reduce

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CrcAlgorithm", "CRC_32", "CRC_16_CCITT_FALSE", "Crc"]


def _reflect(value, width):
    return int(f"{value:0{width}b}"[::-1], 2)


@dataclass(frozen=True, kw_only=True)
class CrcAlgorithm:
    """A CRC in the Rocksoft model's parameters.

    Parameters
    ----------
    name : str
        The catalogue name.
    width : int
        Bits of the CRC, at least 8.
    polynomial : int
        The generator polynomial without its top bit, in normal (not reflected) order.
    initial : int
        The register's value before the first byte.
    reflect : bool
        Bytes enter least significant bit first and the register is read reflected
        (``refin`` and ``refout`` of the model, equal for every CRC used here).
    xor_out : int
        XORed into the register to give the CRC.
    check : int
        The CRC of the nine ASCII bytes ``b"123456789"``, as the catalogue gives it.

    Raises
    ------
    TypeError
        If a parameter has the wrong type.
    ValueError
        If the width is below 8, or a value does not fit it.
    """

    name: str
    width: int
    polynomial: int
    initial: int
    reflect: bool
    xor_out: int
    check: int

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.width, int) or isinstance(self.width, bool):
            raise TypeError(f"width must be an integer, not {self.width!r}")
        if self.width < 8:
            raise ValueError(f"width must be at least 8, not {self.width!r}")
        if not isinstance(self.reflect, bool):
            raise TypeError(f"reflect must be a bool, not {self.reflect!r}")
        for name in ("polynomial", "initial", "xor_out", "check"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, not {value!r}")
            if not 0 <= value < 1 << self.width:
                raise ValueError(f"{name} must fit {self.width} bits, not {value:#x}")
        if not self.polynomial & 1:
            raise ValueError(f"polynomial must have its x**0 term set, not {self.polynomial:#x}")

    @property
    def mask(self):
        return (1 << self.width) - 1

    @cached_property
    def _table(self):
        table = []
        for byte in range(256):
            if self.reflect:
                poly, register = _reflect(self.polynomial, self.width), byte
                for _ in range(8):
                    register = (register >> 1) ^ (poly if register & 1 else 0)
            else:
                top = 1 << (self.width - 1)
                register = byte << (self.width - 8)
                for _ in range(8):
                    register = ((register << 1) & self.mask) ^ (self.polynomial
                                                                if register & top else 0)
            table.append(register)
        return tuple(table)

    @property
    def start(self):
        """The register before the first byte (in the order :meth:`update` keeps it)."""
        return _reflect(self.initial, self.width) if self.reflect else self.initial

    def update(self, register, data):
        """The register after ``data`` (bytes), from ``register``; no final XOR."""
        table, mask, shift = self._table, self.mask, self.width - 8
        for byte in data:
            if self.reflect:
                register = (register >> 8) ^ table[(register ^ byte) & 0xFF]
            else:
                register = ((register << 8) & mask) ^ table[((register >> shift) ^ byte) & 0xFF]
        return register

    def finish(self, register):
        """The CRC a register gives."""
        return register ^ self.xor_out

    def compute(self, data):
        """The CRC of ``data`` (bytes or a sequence of byte values)."""
        try:
            data = bytes(data)
        except (TypeError, ValueError):
            raise TypeError(f"data must be bytes, not {data!r}") from None
        return self.finish(self.update(self.start, data))

    def update_matrix(self):
        """Which bits the register after one byte XORs.

        Returns
        -------
        list of (frozenset of int, frozenset of int)
            For each register bit after the byte, least significant first: the register
            bits and the data bits before it whose XOR it is.
        """
        # Linear with no constant term: update(0, b"\\0") == 0, so the columns for one set
        # bit at a time combine by XOR into any register and byte.
        from_register = [self.update(1 << i, b"\0") for i in range(self.width)]
        from_data = [self.update(0, bytes([1 << j])) for j in range(8)]
        return [(frozenset(i for i in range(self.width) if from_register[i] >> bit & 1),
                 frozenset(j for j in range(8) if from_data[j] >> bit & 1))
                for bit in range(self.width)]


#: CRC-32/ISO-HDLC: Ethernet, zip, PNG; Python's ``zlib.crc32``.
CRC_32 = CrcAlgorithm(name="CRC-32/ISO-HDLC", width=32, polynomial=0x04C11DB7,
                      initial=0xFFFFFFFF, reflect=True, xor_out=0xFFFFFFFF, check=0xCBF43926)
#: CRC-16/IBM-3740 (called CCITT-FALSE): Python's ``binascii.crc_hqx(data, 0xFFFF)``.
CRC_16_CCITT_FALSE = CrcAlgorithm(name="CRC-16/IBM-3740", width=16, polynomial=0x1021,
                                  initial=0xFFFF, reflect=False, xor_out=0x0000, check=0x29B1)


class Crc(wiring.Component):
    """A CRC over a byte stream, one byte per cycle.

    Parameters
    ----------
    algorithm : CrcAlgorithm

    Members
    -------
    clear : In(1)
        Start again: the next byte is the first.  A byte given in the same cycle is the
        first byte of the new CRC.
    valid : In(1)
        ``data`` is a byte of the message (taken at the clock edge).
    data : In(8)
    value : Out(algorithm.width)
        The CRC of the bytes since the last ``clear`` (or reset), as
        :meth:`CrcAlgorithm.compute` gives it.
    """

    def __init__(self, *, algorithm):
        if not isinstance(algorithm, CrcAlgorithm):
            raise TypeError(f"algorithm must be a CrcAlgorithm, not {algorithm!r}")
        self.algorithm = algorithm
        super().__init__({
            "clear": In(1),
            "valid": In(1),
            "data": In(8),
            "value": Out(algorithm.width),
        })

    def elaborate(self, platform):
        m = Module()
        algorithm = self.algorithm
        register = Signal(algorithm.width, init=algorithm.start)
        current = Signal(algorithm.width)
        m.d.comb += current.eq(register)
        with m.If(self.clear):
            m.d.comb += current.eq(algorithm.start)

        following = Signal(algorithm.width)
        for bit, (register_bits, data_bits) in enumerate(algorithm.update_matrix()):
            terms = [current[i] for i in sorted(register_bits)] + \
                    [self.data[j] for j in sorted(data_bits)]
            m.d.comb += following[bit].eq(reduce(operator.xor, terms, 0))

        with m.If(self.valid):
            m.d.sync += register.eq(following)
        with m.Elif(self.clear):
            m.d.sync += register.eq(algorithm.start)
        m.d.comb += self.value.eq(register ^ algorithm.xor_out)
        return m

