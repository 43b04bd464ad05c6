"""Backends that run a command stream: each is a thin class behind :class:`Backend`.

The driver hands a backend command words and data-in bytes and gets data-out bytes
and a status back; it never knows which backend it talks to.
"""

from .base import Backend, BackendUnavailable, available_backends, open_backend

__all__ = ["Backend", "BackendUnavailable", "available_backends", "open_backend"]
