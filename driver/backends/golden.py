"""The golden NumPy model as a backend."""

from sim.golden import DataUnderflow, GoldenNpu
from sim.host_loop import RunTimeout

from .base import Backend

__all__ = ["GoldenBackend"]


class GoldenBackend(Backend):
    """Runs command streams on :class:`sim.golden.GoldenNpu`."""

    name = "golden"

    def __init__(self, *, config=None, **options):
        # An option the NumPy model cannot honour is refused, never ignored.
        for option, value in options.items():
            if option == "trace" and value is not None:
                raise ValueError(f"backend 'golden' cannot write a waveform (trace={value!r}); "
                                 "open verilator, icarus or amaranth for a trace")
            if option == "stall_probability" and value:
                raise ValueError(f"backend 'golden' has no stream to stall "
                                 f"(stall_probability={value!r}); open an RTL backend")
            if option == "max_idle_cycles":
                # The model knows at once when data-in runs short; no watchdog to set.
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise TypeError(f"max_idle_cycles must be a positive integer, not {value!r}")
            elif option not in ("trace", "stall_probability"):
                raise TypeError(f"backend 'golden' takes no option {option!r}")
        super().__init__(config=config)
        self.model = GoldenNpu(self.config)

    def _execute(self, commands, data_in):
        try:
            return self.model.run(commands, data_in)
        except DataUnderflow as exc:
            # The chip would wait for ever, as the RTL backends do until their watchdog.
            raise RunTimeout(f"the chip waits for data-in: {exc}", result=exc.result) from exc

    def _reset(self):
        self.model.reset()
