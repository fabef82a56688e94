"""Pickled messages over a socket: the only wire between the coordinator and a worker.

A message is an 8-byte length and a pickle. Both ends of a :func:`pair` are plain
sockets, so a forked worker and a fresh interpreter (which inherits one end by
file descriptor) talk the same way, and a peer that exits, however it exits,
shows as end-of-file on the other end.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!Q")


class Channel:
    """One end of a duplex message channel (see the module docstring)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        """Two connected ends; neither is inherited by programs this process starts."""
        a, b = socket.socketpair()
        return cls(a), cls(b)

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        """The end a fresh interpreter inherited as file descriptor ``fd``."""
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, obj: Any) -> None:
        """Send one object. Raises ``OSError`` if the other end is gone."""
        self.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(_HEADER.pack(len(data)))
        self.sock.sendall(data)

    def recv(self) -> Any:
        """Receive one object (see :meth:`recv_bytes`)."""
        return pickle.loads(self.recv_bytes())

    def recv_bytes(self) -> bytearray:
        """Receive one message's pickle.

        Raises ``EOFError`` (or ``ConnectionResetError``, when it died before reading
        what was sent to it) if the other end is gone.
        """
        (size,) = _HEADER.unpack(self._exactly(_HEADER.size))
        return self._exactly(size)

    def _exactly(self, size: int) -> bytearray:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise EOFError("the other end of the channel is closed")
            got += n
        return buf

    def close(self) -> None:
        self.sock.close()
