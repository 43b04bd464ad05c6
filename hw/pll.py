"""A PLL that makes the chip's clock from a board's oscillator (ECP5 ``EHXPLLL``, iCE40
``SB_PLL40_PAD``).

The divider search is plain Python (:func:`ecp5_pll`, :func:`ice40_pll`), the same search
Project Trellis' ``ecppll`` and IceStorm's ``icepll`` make, within the limits of each
part's data sheet (:data:`ECP5_PLL_LIMITS`, :data:`ICE40_PLL_LIMITS`).  A frequency the
PLL cannot make within the tolerance raises :class:`ValueError` naming the nearest ones it
can.  :class:`Pll` instantiates the primitive with the settings found.
"""

from dataclasses import dataclass

from amaranth import Instance, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = ["PllLimits", "ECP5_PLL_LIMITS", "ICE40_PLL_LIMITS", "Ecp5PllSettings",
           "Ice40PllSettings", "DirectClock", "ecp5_pll", "ice40_pll", "pll_settings", "Pll"]


@dataclass(frozen=True, kw_only=True)
class PllLimits:
    """Frequency ranges of a PLL, in MHz (from the part's data sheet).

    Attributes
    ----------
    family : str
        ``"ecp5"`` or ``"ice40"``.
    input, pfd, vco, output : tuple of two floats
        Lowest and highest reference input, phase detector, oscillator and output
        frequency.
    """

    family: str
    input: tuple
    pfd: tuple
    vco: tuple
    output: tuple

    def check_input(self, input_mhz):
        _check_mhz("input_mhz", input_mhz)
        low, high = self.input
        if not low <= input_mhz <= high:
            raise ValueError(f"input_mhz must be within {low}..{high} MHz for the "
                             f"{self.family} PLL, not {input_mhz!r}")

    def check_output(self, output_mhz):
        _check_mhz("output_mhz", output_mhz)
        low, high = self.output
        if not low <= output_mhz <= high:
            raise ValueError(f"output_mhz must be within {low}..{high} MHz for the "
                             f"{self.family} PLL, not {output_mhz!r}")


#: LFE5U ``EHXPLLL`` (Lattice FPGA-DS-02012, as Project Trellis' ``ecppll`` uses them).
ECP5_PLL_LIMITS = PllLimits(family="ecp5", input=(8.0, 400.0), pfd=(3.125, 400.0),
                            vco=(400.0, 800.0), output=(10.0, 400.0))
#: iCE40 ``SB_PLL40`` in simple feedback mode (Lattice iCE40 sysCLOCK PLL guide, as
#: IceStorm's ``icepll`` uses them).
ICE40_PLL_LIMITS = PllLimits(family="ice40", input=(10.0, 133.0), pfd=(10.0, 133.0),
                             vco=(533.0, 1066.0), output=(16.0, 275.0))

#: Divider ranges of the ECP5 ``EHXPLLL``: reference, feedback and output divider.
_ECP5_REF_DIVS, _ECP5_FB_DIVS, _ECP5_OUT_DIVS = range(1, 129), range(1, 81), range(1, 129)
#: ``DIVR``, ``DIVF`` and ``DIVQ`` of the iCE40 ``SB_PLL40``.
_ICE40_DIVR, _ICE40_DIVF, _ICE40_DIVQ = range(16), range(128), range(1, 7)


def _check_mhz(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TypeError(f"{name} must be a positive number of MHz, not {value!r}")


def _check_tolerance(tolerance):
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
            or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a fraction at least 0 and below 1, "
                         f"not {tolerance!r}")


@dataclass(frozen=True, kw_only=True)
class Ecp5PllSettings:
    """Dividers of an ECP5 ``EHXPLLL`` with ``CLKOP`` as its feedback.

    ``output_mhz = input_mhz / ref_div * fb_div`` and ``vco_mhz = output_mhz * out_div``.
    """

    input_mhz: float
    ref_div: int
    fb_div: int
    out_div: int

    family = "ecp5"
    primitive = "EHXPLLL"
    #: The PLL takes the oscillator as a signal (the pin's input buffer).
    pad_input = False

    @property
    def pfd_mhz(self):
        return self.input_mhz / self.ref_div

    @property
    def output_mhz(self):
        return self.pfd_mhz * self.fb_div

    @property
    def vco_mhz(self):
        return self.output_mhz * self.out_div

    def instance(self, *, clk_in, clk_out, locked):
        """The ``EHXPLLL`` (parameters and attributes as ``ecppll`` writes them)."""
        return Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{self.input_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{self.output_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=self.ref_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=self.out_div,
            p_CLKOP_CPHASE=(self.out_div - 1) // 2, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=self.fb_div,
            i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)


@dataclass(frozen=True, kw_only=True)
class Ice40PllSettings:
    """``DIVR``, ``DIVF``, ``DIVQ`` of an iCE40 ``SB_PLL40`` in simple feedback mode.

    ``pfd_mhz = input_mhz / (divr + 1)``, ``vco_mhz = pfd_mhz * (divf + 1)``,
    ``output_mhz = vco_mhz / 2**divq``.
    """

    input_mhz: float
    divr: int
    divf: int
    divq: int

    family = "ice40"
    primitive = "SB_PLL40_PAD"
    #: The PLL takes the oscillator's pin itself.
    pad_input = True

    @property
    def pfd_mhz(self):
        return self.input_mhz / (self.divr + 1)

    @property
    def vco_mhz(self):
        return self.pfd_mhz * (self.divf + 1)

    @property
    def output_mhz(self):
        return self.vco_mhz / (1 << self.divq)

    @property
    def filter_range(self):
        """The loop filter setting for the phase detector frequency (as ``icepll``)."""
        for bound, setting in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
            if self.pfd_mhz < bound:
                return setting
        return 6

    def instance(self, *, clk_in, clk_out, locked):
        """The ``SB_PLL40_PAD``: ``clk_in`` is the clock pin itself (an IO port), since the
        PLL of the UP5K takes its reference from the pad beside it, not through the pin's
        input buffer."""
        return Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_DIVR=self.divr, p_DIVF=self.divf, p_DIVQ=self.divq,
            p_FILTER_RANGE=self.filter_range,
            io_PACKAGEPIN=clk_in, o_PLLOUTGLOBAL=clk_out, o_LOCK=locked,
            i_RESETB=1, i_BYPASS=0)


@dataclass(frozen=True, kw_only=True)
class DirectClock:
    """No PLL: the oscillator clocks the chip itself (a frequency below the PLL's range
    that equals the oscillator's, such as the iCE40's 12 MHz)."""

    input_mhz: float
    family: str

    primitive = "none (the oscillator)"
    #: The oscillator arrives as a signal (the pin's input buffer).
    pad_input = False

    @property
    def output_mhz(self):
        return self.input_mhz

    @property
    def vco_mhz(self):
        return 0.0

    def instance(self, *, clk_in, clk_out, locked):
        m = Module()
        m.d.comb += [clk_out.eq(clk_in), locked.eq(1)]
        return m


def _nearest(candidates, output_mhz, limits, tolerance):
    """The candidate nearest ``output_mhz`` (ties: the oscillator nearest the middle of its
    range, the steadiest), or ValueError naming the nearest ones."""
    middle = sum(limits.vco) / 2
    best = min(candidates, key=lambda s: (abs(s.output_mhz - output_mhz),
                                          abs(s.vco_mhz - middle)))
    if abs(best.output_mhz - output_mhz) > tolerance * output_mhz:
        below = max((s.output_mhz for s in candidates if s.output_mhz <= output_mhz),
                    default=None)
        above = min((s.output_mhz for s in candidates if s.output_mhz >= output_mhz),
                    default=None)
        nearest = " and ".join(f"{f:.4g} MHz" for f in (below, above) if f is not None)
        raise ValueError(f"the {limits.family} PLL cannot make {output_mhz:g} MHz from "
                         f"{best.input_mhz:g} MHz within {tolerance:.1%}; nearest: {nearest}")
    return best


def ecp5_pll(*, input_mhz, output_mhz, tolerance=0.01):
    """The ``EHXPLLL`` dividers that make ``output_mhz`` from ``input_mhz``.

    Parameters
    ----------
    input_mhz, output_mhz : float
    tolerance : float
        Largest relative error of the output frequency.

    Returns
    -------
    Ecp5PllSettings

    Raises
    ------
    TypeError
        If a frequency is not a positive number.
    ValueError
        If a frequency is outside the PLL's range, or no dividers come within
        ``tolerance`` of ``output_mhz`` (the message names the nearest frequencies).
    """
    limits = ECP5_PLL_LIMITS
    limits.check_input(input_mhz)
    limits.check_output(output_mhz)
    _check_tolerance(tolerance)
    candidates = []
    for ref_div in _ECP5_REF_DIVS:
        pfd = input_mhz / ref_div
        if not limits.pfd[0] <= pfd <= limits.pfd[1]:
            continue
        for fb_div in _ECP5_FB_DIVS:
            out = pfd * fb_div
            if not limits.output[0] <= out <= limits.output[1]:
                continue
            for out_div in _ECP5_OUT_DIVS:
                if limits.vco[0] <= out * out_div <= limits.vco[1]:
                    candidates.append(Ecp5PllSettings(input_mhz=input_mhz, ref_div=ref_div,
                                                      fb_div=fb_div, out_div=out_div))
    return _nearest(candidates, output_mhz, limits, tolerance)


def ice40_pll(*, input_mhz, output_mhz, tolerance=0.01):
    """The ``SB_PLL40`` dividers (simple feedback) that make ``output_mhz`` from
    ``input_mhz``.

    Parameters, returns and errors as :func:`ecp5_pll`, with :class:`Ice40PllSettings`.
    """
    limits = ICE40_PLL_LIMITS
    limits.check_input(input_mhz)
    limits.check_output(output_mhz)
    _check_tolerance(tolerance)
    candidates = []
    for divr in _ICE40_DIVR:
        pfd = input_mhz / (divr + 1)
        if not limits.pfd[0] <= pfd <= limits.pfd[1]:
            continue
        for divf in _ICE40_DIVF:
            vco = pfd * (divf + 1)
            if not limits.vco[0] <= vco <= limits.vco[1]:
                continue
            for divq in _ICE40_DIVQ:
                if limits.output[0] <= vco / (1 << divq) <= limits.output[1]:
                    candidates.append(Ice40PllSettings(input_mhz=input_mhz, divr=divr,
                                                       divf=divf, divq=divq))
    return _nearest(candidates, output_mhz, limits, tolerance)


def pll_settings(family, *, input_mhz, output_mhz, tolerance=0.01):
    """:func:`ecp5_pll` or :func:`ice40_pll` by ``family`` (``"ecp5"``, ``"ice40"``), or
    :class:`DirectClock` for ``output_mhz`` equal to ``input_mhz`` below the PLL's range."""
    searches = {"ecp5": ecp5_pll, "ice40": ice40_pll}
    limits = {"ecp5": ECP5_PLL_LIMITS, "ice40": ICE40_PLL_LIMITS}
    if family not in searches:
        raise ValueError(f"family must be one of {', '.join(searches)}, not {family!r}")
    if output_mhz == input_mhz and not isinstance(output_mhz, bool) \
            and output_mhz < limits[family].output[0]:
        return DirectClock(input_mhz=input_mhz, family=family)
    return searches[family](input_mhz=input_mhz, output_mhz=output_mhz, tolerance=tolerance)


_SETTINGS = (Ecp5PllSettings, Ice40PllSettings, DirectClock)


class Pll(wiring.Component):
    """The PLL primitive for ``settings``.

    Parameters
    ----------
    settings : Ecp5PllSettings, Ice40PllSettings or DirectClock
    clk_in : Value or IO port
        The oscillator: a signal for the ECP5, the clock pin's IO port for the iCE40
        (``settings.pad_input``).

    Members
    -------
    clk_out : Out(1)
        The clock made.
    locked : Out(1)
        The output is stable.
    """

    clk_out: Out(1)
    locked: Out(1)

    def __init__(self, *, settings, clk_in):
        if not isinstance(settings, _SETTINGS):
            raise TypeError(f"settings must be Ecp5PllSettings, Ice40PllSettings or "
                            f"DirectClock, not {settings!r}")
        self.settings = settings
        self.clk_in = clk_in
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.pll = self.settings.instance(clk_in=self.clk_in, clk_out=self.clk_out,
                                                  locked=self.locked)
        return m
