"""The slot a host link fills on a board: the chip's three streams and its status.

A host link is whatever feeds the chip on a board: the self-test
(:class:`hw.self_test.SelfTest`), which replays a program from ROM, or a serial link to a
host computer.  Every link is a component with two members:

``chip`` : ``Out(HostLinkSignature(config))``
    What it drives into the chip and what it sees of it.
``leds`` : ``Out(shape)``
    Lights for the board, bit 0 first; the board top drives one LED per bit, as many as
    the board has (:class:`hw.board_top.BoardTop`).

A link that needs pins of its own (a UART's ``rx`` and ``tx``) requests them from the
platform in its ``elaborate``.  :class:`LinkedChip` is the chip with a link in its slot,
in the ``sync`` domain of whoever instantiates it (the board top, or a simulator).
"""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import COMMAND_WIDTH, check_config
from .npu import Npu

__all__ = ["HostLinkSignature", "LinkedChip"]


class HostLinkSignature(wiring.Signature):
    """The chip as a host link sees it (the link's side: ``Out`` is what it drives).

    Parameters
    ----------
    config : NpuConfig

    Members
    -------
    commands : Out(stream.Signature(64))
        Command words to the chip.
    data_in : Out(stream.Signature(8 * data_bytes))
        Data-in beats to the chip.
    data_out : In(stream.Signature(8 * data_bytes))
        Data-out beats from the chip.
    busy, error, error_opcode, executed : In(...)
        The chip's status outputs (:class:`hw.npu.Npu`).
    """

    def __init__(self, config):
        check_config(config)
        self.config = config
        super().__init__({
            "commands": Out(stream.Signature(COMMAND_WIDTH)),
            "data_in": Out(stream.Signature(config.data_width)),
            "data_out": In(stream.Signature(config.data_width)),
            "busy": In(1),
            "error": In(isa.status_shape("error")),
            "error_opcode": In(isa.status_shape("error_opcode")),
            "executed": In(isa.status_shape("commands")),
        })

    def __eq__(self, other):
        return isinstance(other, HostLinkSignature) and self.config == other.config

    def __repr__(self):
        return f"HostLinkSignature({self.config!r})"


class LinkedChip(wiring.Component):
    """The chip with a host link in its slot.

    Parameters
    ----------
    link : amaranth.lib.wiring.Component
        A component whose ``chip`` member is ``Out(HostLinkSignature(config))`` for the
        chip's configuration, and which has a ``leds`` member.

    Members
    -------
    leds : Out(shape of the link's leds)
        The link's lights.
    """

    def __init__(self, *, link):
        chip = getattr(getattr(link, "signature", None), "members", {}).get("chip")
        if chip is None or not isinstance(chip.signature, HostLinkSignature) \
                or chip.flow != Out or "leds" not in link.signature.members:
            raise TypeError(f"link must be a component with a chip member "
                            f"Out(HostLinkSignature(config)) and a leds member, not {link!r}")
        self.link = link
        self.config = chip.signature.config
        super().__init__({"leds": Out(link.signature.members["leds"].shape)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.npu = npu = Npu(config=self.config)
        m.submodules.link = link = self.link
        wiring.connect(m, link.chip.commands, npu.commands)
        wiring.connect(m, link.chip.data_in, npu.data_in)
        wiring.connect(m, npu.data_out, link.chip.data_out)
        m.d.comb += [
            link.chip.busy.eq(npu.busy),
            link.chip.error.eq(npu.error),
            link.chip.error_opcode.eq(npu.error_opcode),
            link.chip.executed.eq(npu.executed),
            self.leds.eq(link.leds),
        ]
        return m
