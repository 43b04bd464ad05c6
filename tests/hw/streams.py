"""Stream drivers and monitors for Amaranth simulator testbenches.

Every put and get waits a random number of cycles first, so every stream in every
test sees random idle cycles on the valid side and random backpressure on the
ready side.
"""

from sim.host_loop import random_pauses

__all__ = ["StreamStalls", "stream_put", "stream_get", "put_all", "get_all"]


class StreamStalls:
    """Idle cycles before each transfer, from a pause generator as the host loop's
    (:mod:`sim.host_loop`): a transfer waits while the generator says pause, one value
    per cycle.

    Parameters
    ----------
    seed, probability
        Of the default generator, :func:`sim.host_loop.random_pauses`.
    pauses : iterable of bool, optional
        Any other pause generator (an exhausted one pauses no more).
    """

    def __init__(self, *, seed=0, probability=0.3, pauses=None):
        self.pauses = random_pauses(probability, seed=seed) if pauses is None else iter(pauses)

    def idle_cycles(self):
        idle = 0
        while next(self.pauses, False):
            idle += 1
        return idle


async def stream_put(ctx, stream, payload, stalls=None):
    """Offer ``payload`` on ``stream`` (after random idle cycles) until it is accepted."""
    if stalls is not None:
        for _ in range(stalls.idle_cycles()):
            await ctx.tick()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, stalls=None):
    """Accept one payload from ``stream`` (after random backpressure cycles)."""
    if stalls is not None:
        for _ in range(stalls.idle_cycles()):
            await ctx.tick()
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def put_all(ctx, stream, payloads, stalls=None):
    for payload in payloads:
        await stream_put(ctx, stream, payload, stalls)


async def get_all(ctx, stream, count, stalls=None):
    return [await stream_get(ctx, stream, stalls) for _ in range(count)]
