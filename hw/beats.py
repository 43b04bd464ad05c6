"""How byte vectors travel on the chip's data streams: the one packing helper.

A data stream carries beats of ``config.data_bytes`` bytes.  Every vector (an
activation row, a weight row, a requantization record, a stored row, a status
record) starts on a beat boundary and is padded with zero bytes to whole beats.
A beat is the little-endian integer of its bytes: byte 0 is bits ``[7:0]``.

The hardware's deserializer and serializer implement this; the golden model, the
driver's lowering and the simulator host loops use these functions and nothing else.
"""

import numpy as np

from .config import check_config

__all__ = ["row_stride", "pack_rows", "unpack_rows", "to_beats", "from_beats"]


def row_stride(config, nbytes):
    """Bytes one vector of ``nbytes`` bytes takes on the stream (whole beats)."""
    return config.beats(nbytes) * config.data_bytes


def pack_rows(config, rows):
    """Byte rows (2-D uint8 or int8) as stream bytes, each row padded to whole beats.

    Raises
    ------
    ValueError
        If ``rows`` is not 2-D.
    """
    check_config(config)
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D, not of shape {rows.shape}")
    rows = rows.view(np.uint8) if rows.dtype == np.int8 else rows.astype(np.uint8)
    padded = np.zeros((rows.shape[0], row_stride(config, rows.shape[1])), dtype=np.uint8)
    padded[:, :rows.shape[1]] = rows
    return padded.tobytes()


def unpack_rows(config, data, count, nbytes, *, offset=0):
    """``count`` rows of ``nbytes`` bytes from stream bytes ``data`` at byte ``offset``:
    the inverse of :func:`pack_rows`, as a read-only ``[count, nbytes]`` uint8 view.

    Raises
    ------
    ValueError
        If ``data`` holds fewer than ``count`` padded rows after ``offset``.
    """
    stride = row_stride(config, nbytes)
    if offset + count * stride > len(data):
        raise ValueError(f"{count} rows of {nbytes} bytes need {count * stride} stream bytes "
                         f"at offset {offset}, there are {len(data) - offset}")
    block = np.frombuffer(data, dtype=np.uint8, count=count * stride, offset=offset)
    return block.reshape(count, stride)[:, :nbytes]


def to_beats(config, data):
    """Stream bytes as a list of beat integers.

    Raises
    ------
    ValueError
        If ``data`` is not a whole number of beats.
    """
    data = bytes(data)
    width = config.data_bytes
    if len(data) % width:
        raise ValueError(f"data must be whole {width}-byte beats, not {len(data)} bytes")
    return [int.from_bytes(data[i:i + width], "little") for i in range(0, len(data), width)]


def from_beats(config, beats):
    """Beat integers back to stream bytes: the inverse of :func:`to_beats`."""
    width = config.data_bytes
    return b"".join(int(beat).to_bytes(width, "little") for beat in beats)
