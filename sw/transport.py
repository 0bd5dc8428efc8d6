"""Byte transports between the host and the board.

A transport is anything with ``write(data)``, ``read(max_bytes, timeout) -> bytes`` (at most
``max_bytes``, waiting at most ``timeout`` seconds for the first byte, ``b""`` if none came) and
``close()``. :class:`SerialTransport` is the real one: pyserial's ``serial_for_url`` opens
``/dev/ttyUSB0`` (the ULX3S's FT231X) and ``socket://127.0.0.1:PORT`` (the board model,
``sim/board.py``) alike. :mod:`sw.record` wraps a transport to record a session and replays one.
"""

import serial

__all__ = ["DEFAULT_BAUD", "TransportError", "SerialTransport", "open_transport"]

DEFAULT_BAUD = 3_000_000


class TransportError(OSError):
    """The transport failed: the port vanished, the socket closed, nothing listens."""


class SerialTransport:
    """A pyserial port (any URL ``serial_for_url`` understands).

    Parameters
    ----------
    url : str
        ``/dev/ttyUSB0``, ``COM3``, ``socket://127.0.0.1:PORT``, ``loop://`` ...
    baud : int
        Line rate (ignored by ``socket://``).
    """

    def __init__(self, url: str, baud: int = DEFAULT_BAUD):
        self.url = url
        self.baud = baud
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=0, write_timeout=10)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"cannot open {url}: {exc}") from exc
        self._timeout = 0

    def _set_timeout(self, timeout):
        if timeout != self._timeout:
            self._port.timeout = timeout
            self._timeout = timeout

    def write(self, data: bytes):
        try:
            self._port.write(data)
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"write to {self.url} failed: {exc}") from exc

    def read(self, max_bytes: int, timeout: float) -> bytes:
        try:
            self._set_timeout(max(0.0, timeout))
            first = self._port.read(1)
            if not first or max_bytes <= 1:
                return first
            self._set_timeout(0)
            return first + self._port.read(max_bytes - 1)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"read from {self.url} failed: {exc}") from exc

    def close(self):
        # pyserial's socket:// close() skips closing the socket when shutdown() fails (the peer
        # is gone), leaking it; close it here as well.
        sock = getattr(self._port, "_socket", None)
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass
        if sock is not None:
            sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_transport(url: str, baud: int = DEFAULT_BAUD) -> SerialTransport:
    """Open ``url`` at ``baud`` (3 Mbaud, the ULX3S link, by default)."""
    return SerialTransport(url, baud)
