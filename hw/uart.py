"""The UART's line format, 8N1, and its bit timing (:class:`hw.uart_tx.UartTx`,
:class:`hw.uart_rx.UartRx`).

A byte on the line is a start bit (low), eight data bits least significant first and a
stop bit (high); the idle line is high.  Both ends count ``divisor`` clock cycles per
bit; :func:`uart_divisor` finds it from the clock and the baud rate.
"""

import numbers

__all__ = ["DATA_BITS", "MAX_BAUD_ERROR", "MIN_DIVISOR", "uart_divisor", "check_divisor"]

#: Data bits of a byte on the line (8N1: no parity, one stop bit).
DATA_BITS = 8
#: How far the bit rate a divisor gives may be from the one asked for.  The receiver
#: samples the stop bit 9.5 bits after the start edge, so the two ends may differ by
#: about 5 % in all; each end takes under half of that.
MAX_BAUD_ERROR = 0.02
#: The fewest clock cycles per bit: the receiver samples mid-bit, at least two cycles
#: from either edge of the bit.
MIN_DIVISOR = 4


def check_divisor(divisor):
    """``divisor`` as an int, or a ``TypeError``/``ValueError`` naming it."""
    if not isinstance(divisor, numbers.Integral) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} clock cycles per bit, "
                         f"not {divisor!r}")
    return int(divisor)


def uart_divisor(*, clk_frequency, baud_rate):
    """Clock cycles per bit for ``baud_rate`` from a ``clk_frequency`` clock.

    Parameters
    ----------
    clk_frequency : float
        Of the clock the UART runs on, in Hz.
    baud_rate : float
        Bits per second on the line.

    Returns
    -------
    int
        The nearest whole number of cycles per bit.

    Raises
    ------
    TypeError
        If either is not a positive number.
    ValueError
        If the nearest divisor is below :data:`MIN_DIVISOR`, or its bit rate is
        :data:`MAX_BAUD_ERROR` or more from ``baud_rate``.
    """
    for name, value in (("clk_frequency", clk_frequency), ("baud_rate", baud_rate)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise TypeError(f"{name} must be a positive number of Hz, not {value!r}")
    divisor = round(clk_frequency / baud_rate)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"clk_frequency {clk_frequency:g} Hz is too slow for baud_rate "
                         f"{baud_rate:g}: {clk_frequency / baud_rate:.3g} cycles per bit, "
                         f"the receiver needs at least {MIN_DIVISOR}")
    error = abs(clk_frequency / divisor - baud_rate) / baud_rate
    if error >= MAX_BAUD_ERROR:
        raise ValueError(f"clk_frequency {clk_frequency:g} Hz cannot make baud_rate "
                         f"{baud_rate:g}: the nearest divisor {divisor} gives "
                         f"{clk_frequency / divisor:g} baud, {100 * error:.2f} % off "
                         f"(at most {100 * MAX_BAUD_ERROR:g} % works)")
    return divisor
