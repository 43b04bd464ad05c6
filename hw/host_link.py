"""The slot a host link fills on a board: the chip's three streams and its status.

A host link is whatever feeds the chip on a board: the self-test
(:class:`hw.self_test.SelfTest`), which replays a program from ROM, or a serial link to a
host computer.  Every link is a component with two members:

``chip`` : ``Out(HostLinkSignature(config))``
    What it drives into the chip and what it sees of it.
``leds`` : ``Out(shape)``
    Lights for the board, bit 0 first; the board top drives one LED per bit, as many as
    the board has (:class:`hw.board_top.BoardTop`).

Any other member of a link (a UART's ``rx`` and ``tx``, for example) becomes a member of
:class:`LinkedChip`, the chip with a link in its slot, in the ``sync`` domain of whoever
instantiates it: the board top wires ``rx`` and ``tx`` to the board's UART pins, a
simulator drives them itself (:mod:`sim.serial_harness`).
"""

from amaranth import Module, ResetInserter
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
    reset : Out(1)
        High for a cycle or more: resets the chip as its ``rst`` does (``RESET_STATE`` in
        :mod:`hw.isa`); a link that never resets the chip leaves it low.
    busy, error, error_opcode, executed, cycles, array_cycles : In(...)
        The chip's status outputs (:class:`hw.npu.Npu`).
    """

    def __init__(self, config):
        check_config(config)
        self.config = config
        super().__init__({
            "commands": Out(stream.Signature(COMMAND_WIDTH)),
            "data_in": Out(stream.Signature(config.data_width)),
            "data_out": In(stream.Signature(config.data_width)),
            "reset": Out(1),
            "busy": In(1),
            "error": In(isa.status_shape("error")),
            "error_opcode": In(isa.status_shape("error_opcode")),
            "executed": In(isa.status_shape("commands")),
            "cycles": In(isa.status_shape("commands")),
            "array_cycles": In(isa.status_shape("commands")),
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
    (others) :
        Every member of the link other than ``chip``, as the link has it.
    """

    def __init__(self, *, link):
        chip = getattr(getattr(link, "signature", None), "members", {}).get("chip")
        if chip is None or not isinstance(chip.signature, HostLinkSignature) \
                or chip.flow != Out or "leds" not in link.signature.members:
            raise TypeError(f"link must be a component with a chip member "
                            f"Out(HostLinkSignature(config)) and a leds member, not {link!r}")
        self.link = link
        self.config = chip.signature.config
        super().__init__({name: member for name, member in link.signature.members.items()
                          if name != "chip"})

    def elaborate(self, platform):
        m = Module()
        npu = Npu(config=self.config)
        link = self.link
        m.submodules.npu = ResetInserter(link.chip.reset)(npu)
        m.submodules.link = link
        wiring.connect(m, link.chip.commands, npu.commands)
        wiring.connect(m, link.chip.data_in, npu.data_in)
        wiring.connect(m, npu.data_out, link.chip.data_out)
        m.d.comb += [
            link.chip.busy.eq(npu.busy),
            link.chip.error.eq(npu.error),
            link.chip.error_opcode.eq(npu.error_opcode),
            link.chip.executed.eq(npu.executed),
            link.chip.cycles.eq(npu.cycles),
            link.chip.array_cycles.eq(npu.array_cycles),
        ]
        for name, member in self.signature.members.items():
            if member.flow == Out:
                m.d.comb += getattr(self, name).eq(getattr(link, name))
            else:
                m.d.comb += getattr(link, name).eq(getattr(self, name))
        return m
