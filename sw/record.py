"""Record a host <-> board session and replay it without the board.

:class:`RecordingTransport` wraps a transport and writes one JSON object per line:

* first line: ``{"meta": {...}}`` (format version, the wrapped URL if known, start time);
* then, in the order they happened, ``{"t": seconds since start, "dir": "tx" | "rx",
  "hex": "a5 01 ..."}``: ``tx`` is one write by the host (one frame, the client writes frames
  whole), ``rx`` all bytes the host read between two writes (normally one reply frame).

:class:`ReplayTransport` serves such a file to a client: each write must equal the next ``tx``
record (else :class:`ReplayMismatch`), and reads return the ``rx`` bytes recorded after it. Where
the recording has no answer (the board was silent and the client timed out), a read waits out its
timeout and returns nothing, so the client's retries replay as they happened.
"""

import json
import time

__all__ = ["FORMAT", "RecordingTransport", "ReplayTransport", "ReplayMismatch", "load_session"]

FORMAT = "ternary-fpga-link-session/1"


class ReplayMismatch(AssertionError):
    """The replayed client sent something other than what the recorded client sent."""


def _hex(data: bytes) -> str:
    return data.hex(" ")


class RecordingTransport:
    """Pass-through transport that logs every frame to ``path`` (JSON lines)."""

    def __init__(self, inner, path, **meta):
        self._inner = inner
        self._f = open(path, "w")
        self._t0 = time.monotonic()
        self._rx = bytearray()
        self._rx_t = None
        info = {"format": FORMAT, "url": getattr(inner, "url", None), "started": time.time()}
        info.update(meta)
        self._f.write(json.dumps({"meta": info}) + "\n")

    @property
    def url(self):
        return getattr(self._inner, "url", None)

    def _log(self, direction, data, t):
        self._f.write(json.dumps({"t": round(t, 6), "dir": direction, "hex": _hex(data)}) + "\n")

    def _flush_rx(self):
        if self._rx:
            self._log("rx", bytes(self._rx), self._rx_t)
            self._rx.clear()

    def write(self, data: bytes):
        self._flush_rx()
        self._log("tx", bytes(data), time.monotonic() - self._t0)
        self._inner.write(data)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        data = self._inner.read(max_bytes, timeout)
        if data:
            if not self._rx:
                self._rx_t = time.monotonic() - self._t0
            self._rx += data
        return data

    def close(self):
        self._flush_rx()
        self._f.close()
        self._inner.close()


def load_session(path) -> tuple[dict, list[dict]]:
    """The meta record and the list of frame records of a recording."""
    meta, records = {}, []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if "meta" in obj:
                meta = obj["meta"]
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{path}: not a {FORMAT} recording ({meta.get('format')!r})")
            else:
                if obj.get("dir") not in ("tx", "rx"):
                    raise ValueError(f"{path}: bad record {obj!r}")
                records.append(obj)
    return meta, records


class ReplayTransport:
    """Serves a recorded session to a client, checking that it sends the same frames.

    Parameters
    ----------
    path : str or Path
        A file written by :class:`RecordingTransport`.
    """

    def __init__(self, path):
        self.meta, self._records = load_session(path)
        self.url = f"replay:{path}"
        self._pos = 0
        self._buf = bytearray()

    def _take_rx(self):
        while self._pos < len(self._records) and self._records[self._pos]["dir"] == "rx":
            self._buf += bytes.fromhex(self._records[self._pos]["hex"])
            self._pos += 1

    def write(self, data: bytes):
        self._take_rx()  # bytes the recorded host read (or drained) before this write
        self._buf.clear()
        if self._pos >= len(self._records):
            raise ReplayMismatch(f"the client sent {_hex(data[:16])}... after the end of the recording")
        rec = self._records[self._pos]
        want = bytes.fromhex(rec["hex"])
        if bytes(data) != want:
            raise ReplayMismatch(f"record {self._pos}: the client sent {_hex(data[:24])}..., "
                                 f"the recording has {_hex(want[:24])}...")
        self._pos += 1

    def read(self, max_bytes: int, timeout: float) -> bytes:
        if not self._buf:
            self._take_rx()
        if not self._buf:
            time.sleep(timeout)  # the board was silent here in the recording
            return b""
        out = bytes(self._buf[:max_bytes])
        del self._buf[:max_bytes]
        return out

    @property
    def finished(self) -> bool:
        """All records were replayed."""
        return self._pos >= len(self._records) and not self._buf

    def close(self):
        pass
