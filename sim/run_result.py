"""What one run of a command stream produced: the result type of every model and runner.

The golden model (:class:`sim.golden.GoldenNpu`), the Amaranth session
(:class:`sim.amaranth_runner.AmaranthSession`), the RTL session
(:class:`sim.rtl.RtlSession`) and every driver backend return a :class:`RunResult`.
"""

from dataclasses import dataclass

from hw.isa import StatusRecord

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """What one run sent back and how long it took."""
    #: Every byte the chip sent on its data-out stream.
    data_out: bytes
    #: Sticky error, failing opcode and command count after the last command.
    status: StatusRecord
    #: Clock cycles from the first command to idle (the chip's ``cycles`` counter, or the
    #: cycle model's count of an unstalled run); None where nothing counts them.
    cycles: int | None = None
    #: True when ``cycles`` was measured on the RTL, False when it is the cycle model's.
    cycles_measured: bool = False
    #: Cycles an activation vector entered the array (``array_macs / (rows * cols)``).
    array_cycles: int | None = None
    #: Multiply-accumulates the array issued (``rows * cols`` per activation vector).
    array_macs: int | None = None
    #: Bytes of the data-in stream the chip took.
    data_in_used: int | None = None
    #: True when a reset cut the run short (``reset_after`` of the compiled session):
    #: ``data_out`` is what came out before it, ``status`` the chip's after it.
    reset: bool = False

    _INTEGERS = ("cycles", "array_cycles", "array_macs", "data_in_used")

    def as_arrays(self):
        """The result as plain values for ``numpy.savez`` (see :meth:`from_arrays`)."""
        import numpy as np
        values = {"data_out": np.frombuffer(self.data_out, dtype=np.uint8),
                  "error": self.status.error, "error_opcode": self.status.error_opcode,
                  "commands": self.status.commands, "cycles_measured": self.cycles_measured,
                  "reset": self.reset}
        values.update({name: -1 if getattr(self, name) is None else getattr(self, name)
                       for name in self._INTEGERS})
        return values

    @classmethod
    def from_arrays(cls, arrays):
        """The inverse of :meth:`as_arrays` (for example a loaded ``.npz``)."""
        return cls(data_out=arrays["data_out"].tobytes(),
                   status=StatusRecord(error=int(arrays["error"]),
                                       error_opcode=int(arrays["error_opcode"]),
                                       commands=int(arrays["commands"])),
                   cycles_measured=bool(arrays["cycles_measured"]),
                   reset=bool(arrays["reset"]),
                   **{name: None if int(arrays[name]) < 0 else int(arrays[name])
                      for name in cls._INTEGERS})
