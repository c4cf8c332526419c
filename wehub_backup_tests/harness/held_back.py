"""The sending side of a relayed connection, each block held back before it goes on.

The fault relay holds bytes back to pace a connection or to stall it; the benchmark's link holds
them back to the rate all connections share. Only how long each block waits differs.
"""

from __future__ import annotations

import socket
from collections.abc import Callable


class HeldBackSocket:
    """``sock`` whose ``sendall`` first calls ``hold_back`` with the block's size."""

    def __init__(self, sock: socket.socket, hold_back: Callable[[int], None]) -> None:
        self._sock = sock
        self._hold_back = hold_back

    def sendall(self, data: memoryview) -> None:
        self._hold_back(len(data))
        self._sock.sendall(data)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()
