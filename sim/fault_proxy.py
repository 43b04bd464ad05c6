"""A TCP proxy that breaks a serial link's bytes on purpose: between the serial backend
and the simulated board (:mod:`sim.serial_harness`), it flips bits, drops bytes and
sends whole frames twice, at chosen rates, in each direction.

The proxy finds the frames in each direction's clean stream (:class:`FrameDecoder` of
:mod:`hw.link_protocol`), decides per frame whether to send it twice, then per byte
whether to flip one of its bits (``flip_rate``) or drop it (``drop_rate``).  A seeded
generator per direction makes the faults repeatable for a given byte stream (the timing
of retransmissions can still change which bytes they fall on).
"""

import random
import selectors
import socket
import threading

from hw.link_protocol import FrameDecoder, encode_frame

__all__ = ["FaultProxy"]

DIRECTIONS = ("to_chip", "to_host")


def _rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {value!r}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be at least 0 and below 1, not {value!r}")
    return float(value)


class _Direction:
    def __init__(self, rng, flip_rate, drop_rate, duplicate_rate):
        self.rng = rng
        self.flip_rate, self.drop_rate, self.duplicate_rate = flip_rate, drop_rate, duplicate_rate
        self.decoder = FrameDecoder()
        self.counts = {"bytes": 0, "flipped": 0, "dropped": 0, "duplicated": 0, "frames": 0}

    def process(self, data):
        out = bytearray()
        for frame in self.decoder.feed(data):
            raw = encode_frame(frame.type, frame.seq, frame.payload)
            self.counts["frames"] += 1
            if self.rng.random() < self.duplicate_rate:
                # Both copies whole: what a duplicate tests is the receiver's sequence
                # check, which a broken copy (dropped for its CRC) would never reach.
                self.counts["duplicated"] += 1
                self.counts["bytes"] += 2 * len(raw)
                out += raw + raw
                continue
            for byte in raw:
                self.counts["bytes"] += 1
                draw = self.rng.random()
                if draw < self.drop_rate:
                    self.counts["dropped"] += 1
                    continue
                if draw < self.drop_rate + self.flip_rate:
                    byte ^= 1 << self.rng.randrange(8)
                    self.counts["flipped"] += 1
                out.append(byte)
        return bytes(out)


class FaultProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards one connection at a time to
    ``target`` (a ``(host, port)``), breaking bytes on the way.

    Parameters
    ----------
    target : (str, int)
        Where to connect (the simulated board's address).
    flip_rate, drop_rate : float
        Chance per byte, in each direction, of a flipped bit and of a dropped byte.
    duplicate_rate : float
        Chance per frame of sending it twice, both copies whole (no byte of them broken).
    seed : int

    Attributes
    ----------
    url : str
        ``socket://127.0.0.1:<port>`` to give the serial backend.
    counts : dict
        Per direction (``to_chip``, ``to_host``): bytes, flipped, dropped, duplicated,
        frames.
    """

    def __init__(self, *, target, flip_rate=0.0, drop_rate=0.0, duplicate_rate=0.0, seed=0):
        if not (isinstance(target, tuple) and len(target) == 2):
            raise TypeError(f"target must be a (host, port) pair, not {target!r}")
        self.target = target
        rates = {"flip_rate": flip_rate, "drop_rate": drop_rate,
                 "duplicate_rate": duplicate_rate}
        self.rates = {name: _rate(name, value) for name, value in rates.items()}
        if self.rates["flip_rate"] + self.rates["drop_rate"] >= 1:
            raise ValueError("flip_rate + drop_rate must be below 1, "
                             f"not {self.rates['flip_rate'] + self.rates['drop_rate']!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, not {seed!r}")
        self._directions = {name: _Direction(random.Random(f"{seed}/{name}"), **self.rates)
                            for name in DIRECTIONS}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._cut = False
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()

    def cut(self, cut=True):
        """Drop every byte from now on, both ways (a pulled cable); ``cut=False`` plugs
        it back in."""
        self._cut = bool(cut)

    @property
    def counts(self):
        return {name: dict(direction.counts) for name, direction in self._directions.items()}

    def _serve(self):
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                host, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with host, socket.create_connection(self.target) as chip:
                for end in (host, chip):
                    end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._forward(host, chip)

    def _forward(self, host, chip):
        selector = selectors.DefaultSelector()
        selector.register(host, selectors.EVENT_READ, (chip, self._directions["to_chip"]))
        selector.register(chip, selectors.EVENT_READ, (host, self._directions["to_host"]))
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    selector.close()
                    return
                other, direction = key.data
                out = direction.process(data)
                if out and not self._cut:
                    other.sendall(out)
        selector.close()

    def close(self):
        """Stop forwarding and close the listening socket."""
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
