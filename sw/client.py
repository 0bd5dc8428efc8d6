"""Host client of the board link protocol (:mod:`sw.protocol`).

Each request is one frame with a fresh sequence number; replies echo it. Single commands are
stop-and-wait; uploads and reads keep two frames in flight (go-back-N), which hides the host's
turnaround (USB latency) behind the next frame. A reply that does not come within the attempt's
time, a reply with a bad CRC (dropped by the decoder), a reply overtaken by a later one, or an
error reply saying the frame was damaged on the way (BAD_CRC, TIMEOUT, LEN over the maximum)
makes the client send the oldest unanswered frame and those after it again, at most ``retries``
times per frame; then :class:`LinkTimeout` (or :class:`RemoteError` with the last code). Every
request is idempotent (WRITE writes the same bytes to the same place again), so a retransmission
is always safe. Errors that say the request itself is wrong (bad address, unknown command,
unsupported) are raised at once as :class:`RemoteError`.

A board that stops answering therefore ends in :class:`LinkTimeout` after at most
``(retries + 1) * (timeout + transfer time)`` seconds, never a hang.
"""

import collections
import time

from . import protocol as P
from .transport import TransportError, open_transport

__all__ = ["LinkError", "LinkTimeout", "RemoteError", "VerifyError", "Client"]

C, E = P.Command, P.ErrorCode

# Error codes that mean "the frame was damaged or cut off on the way": worth retransmitting.
TRANSIENT = frozenset({E.BAD_CRC, E.TIMEOUT, E.BAD_LENGTH})


class LinkError(Exception):
    """Base class of the link errors."""


class LinkTimeout(LinkError):
    """The board did not answer (after the retries), or cannot be reached at all."""


class RemoteError(LinkError):
    """The board answered with an error code."""

    def __init__(self, code: int, command: int, message: str = ""):
        self.code, self.command = code, command
        try:
            name = E(code).name
        except ValueError:
            name = f"code {code:#04x}"
        try:
            cmd = C(command).name
        except ValueError:
            cmd = f"{command:#04x}"
        super().__init__(f"board answered {name} to {cmd}" + (f": {message}" if message else ""))


class VerifyError(LinkError):
    """The CRC of the board's memory differs from that of the data uploaded."""


class Client:
    """Talks to a board (or the board model) over a transport.

    Parameters
    ----------
    transport
        See :mod:`sw.transport`.
    timeout : float
        Seconds an attempt waits for a reply beyond the frames' transfer time at ``baud``.
        Must exceed the board's inter-byte timeout (10 ms on the ULX3S build).
    retries : int
        Retransmissions of a frame before giving up.
    baud : int
        Line rate, for the transfer time.
    """

    def __init__(self, transport, *, timeout: float = 1.0, retries: int = 4, baud: int = 3_000_000):
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self._t = transport
        self.timeout = timeout
        self.retries = retries
        self.baud = baud
        self._seq = 0
        self._dec = P.FrameDecoder(max_len=0xFFFF)
        self._frames = collections.deque()  # decoded replies not yet consumed
        self.manifest: P.Manifest | None = None
        self.retransmissions = 0   #: frames sent again (for diagnostics and tests)
        self.bytes_sent = 0
        self.bytes_received = 0

    @classmethod
    def open(cls, url: str, *, baud: int = 3_000_000, **kwargs) -> "Client":
        """Open ``url`` (``/dev/ttyUSB0``, ``socket://...``); :class:`LinkTimeout` if unreachable."""
        try:
            transport = open_transport(url, baud)
        except TransportError as exc:
            raise LinkTimeout(f"no board answers at {url}: {exc}") from exc
        return cls(transport, baud=baud, **kwargs)

    def close(self):
        self._t.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- frames ---------------------------------------------------------------------------------

    def _line_time(self, nbytes: int) -> float:
        return nbytes * 10 / self.baud

    def request(self, cmd: int, payload: bytes = b"", *, reply_bytes: int = 64) -> P.Frame:
        """Send one request and return its (successful) reply frame."""
        return self.pipeline([(cmd, payload, reply_bytes)], window=1)[0]

    def pipeline(self, requests, *, window: int = 2, progress=None) -> list:
        """Run ``requests`` (``(cmd, payload, reply_bytes)`` tuples) in order with up to ``window``
        frames in flight; return their reply frames.

        The board executes frames in arrival order, so replies come in order. A reply missing,
        damaged, or overtaken by the reply to a later frame makes the client go back: it sends
        the oldest unanswered frame and all after it again (go-back-N; the commands are
        idempotent). ``progress(i)`` is called as request ``i`` completes.
        """
        if window < 1:
            raise ValueError("window must be >= 1")
        frames, seqs = [], []
        for cmd, payload, _ in requests:
            self._seq = (self._seq + 1) & 0xFF
            seqs.append(self._seq)
            frames.append(P.encode_frame(cmd, self._seq, payload))
        n = len(requests)
        results = [None] * n
        failures = [0] * n
        last = ["no reply"] * n
        base = next_send = 0
        while base < n:
            sent_ok = True
            while next_send < n and next_send - base < window:
                try:
                    self._t.write(frames[next_send])
                    self.bytes_sent += len(frames[next_send])
                except TransportError as exc:
                    last[base] = str(exc)
                    sent_ok = False
                    break
                next_send += 1
            if sent_ok:
                inflight = range(base, next_send)
                line = sum(len(frames[i]) + requests[i][2] + P.OVERHEAD for i in inflight)
                reply, index, why = self._await({seqs[i]: i for i in inflight},
                                                {seqs[i]: requests[i][0] for i in inflight},
                                                self.timeout + 2 * self._line_time(line))
                if reply is not None and index == base and not reply.is_error:
                    results[base] = reply
                    if progress is not None:
                        progress(base)
                    base += 1
                    continue
                if reply is not None and reply.is_error and reply.error_code not in TRANSIENT:
                    raise RemoteError(reply.error_code, requests[index][0])
                if reply is None:
                    last[base] = why
                elif reply.is_error:
                    last[base] = f"board reported {E(reply.error_code).name}"
                else:
                    last[base] = "a later frame was answered first"
            else:
                time.sleep(min(self.timeout, 0.05))
            # Go back: everything from the oldest unanswered frame is sent again.
            failures[base] += 1
            cmd = requests[base][0]
            if failures[base] > self.retries:
                if last[base].startswith("board reported"):
                    raise RemoteError(E[last[base].split()[-1]], cmd,
                                      f"still after {self.retries} retransmissions")
                name = C(cmd).name if cmd in C._value2member_map_ else hex(cmd)
                raise LinkTimeout(f"{name}: no valid reply after {self.retries + 1} attempts "
                                  f"({last[base]})")
            self.retransmissions += max(1, next_send - base)
            next_send = base
            self._drain()
        return results

    def _drain(self):
        self._dec.reset()
        self._frames.clear()
        try:
            while self._t.read(65536, 0):
                pass
        except TransportError:
            pass

    def _await(self, index_of, cmd_of, timeout):
        """Wait for a reply to one of the in-flight frames; (frame, index, why-not)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._frames:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None, None, "timed out"
                try:
                    chunk = self._t.read(65536, left)
                except TransportError as exc:
                    time.sleep(min(left, 0.05))
                    return None, None, str(exc)
                self.bytes_received += len(chunk)
                self._frames.extend(self._dec.feed(chunk))
            while self._frames:
                f = self._frames.popleft()  # frames decoded but not yet looked at are kept
                i = index_of.get(f.seq)
                if i is not None and f.type == cmd_of[f.seq] | P.REPLY_FLAG:
                    return f, i, ""
                if f.is_error and f.payload and (i is not None or f.error_code in TRANSIENT):
                    # A damaged frame of ours may have reached the board with a garbage SEQ.
                    return f, i if i is not None else min(index_of.values()), ""
                # anything else is a stale reply to an earlier attempt: ignore it

    # --- commands -------------------------------------------------------------------------------

    def hello(self) -> P.Manifest:
        """Read the board's manifest (and check it speaks this protocol)."""
        m = P.Manifest.unpack(self.request(C.HELLO).payload)
        if m.magic != P.MANIFEST_MAGIC:
            raise LinkError(f"not a ternary-fpga board (magic {m.magic:#010x})")
        if m.version != P.PROTOCOL_VERSION:
            raise LinkError(f"board speaks protocol {m.version}, host {P.PROTOCOL_VERSION}")
        self.manifest = m
        return m

    def _max_data(self) -> int:
        if self.manifest is None:
            self.hello()
        return self.manifest.max_data

    def _check_range(self, mem, addr, n):
        m = self.manifest
        if m is not None and (mem >= len(m.mem_sizes) or addr < 0 or addr + n > m.mem_sizes[mem]):
            raise ValueError(f"{n} bytes at {addr:#x} do not fit memory {mem} "
                             f"({m.mem_sizes[mem] if mem < len(m.mem_sizes) else 'none'} bytes)")

    def write(self, mem: int, addr: int, data, progress=None, chunk: int | None = None,
              window: int = 2):
        """Write ``data`` (bytes or a uint8 array) at ``addr`` of memory ``mem``, in frames of at
        most ``max_data`` bytes with ``window`` frames in flight; ``progress(done, total)`` is
        called as each frame is acknowledged."""
        data = bytes(data)
        size = min(chunk or self._max_data(), self._max_data())
        self._check_range(mem, addr, len(data))
        offsets = list(range(0, len(data), size))
        reqs = [(C.WRITE, P.write_request(mem, addr + off, data[off:off + size]), 0) for off in offsets]
        report = None
        if progress is not None:
            def report(i):
                progress(min(offsets[i] + size, len(data)), len(data))
        self.pipeline(reqs, window=window, progress=report)

    def read(self, mem: int, addr: int, count: int, window: int = 2) -> bytes:
        """Read ``count`` bytes from ``addr`` of memory ``mem``."""
        size = self._max_data()
        self._check_range(mem, addr, count)
        offsets = list(range(0, count, size))
        reqs = [(C.READ, P.read_request(mem, addr + off, min(size, count - off)), min(size, count - off))
                for off in offsets]
        out = bytearray()
        for (_, _, n), reply in zip(reqs, self.pipeline(reqs, window=window)):
            if len(reply.payload) != n:
                raise LinkError(f"READ returned {len(reply.payload)} bytes, asked for {n}")
            out += reply.payload
        return bytes(out)

    def crc(self, mem: int, addr: int, count: int) -> int:
        """CRC-32 (:func:`sw.protocol.crc32`) the board computes over a memory range."""
        self._check_range(mem, addr, count)
        # The board reads one byte per two cycles; allow for that on top of the line time.
        extra = 2 * count / (self.manifest.clk_hz if self.manifest else 24_000_000)
        old = self.timeout
        self.timeout = old + extra
        try:
            reply = self.request(C.CRC, P.crc_request(mem, addr, count), reply_bytes=4)
        finally:
            self.timeout = old
        return int.from_bytes(reply.payload, "little")

    def verify(self, mem: int, addr: int, data) -> None:
        """Raise :class:`VerifyError` unless the board's memory holds ``data`` at ``addr``."""
        data = bytes(data)
        got, want = self.crc(mem, addr, len(data)), P.crc32(data)
        if got != want:
            raise VerifyError(f"memory {mem} at {addr:#x}, {len(data)} bytes: board CRC {got:#010x}, "
                              f"expected {want:#010x}")

    def upload(self, mem: int, addr: int, data, progress=None):
        """:meth:`write` then :meth:`verify`."""
        self.write(mem, addr, data, progress)
        self.verify(mem, addr, data)

    def status(self) -> P.Status:
        return P.Status.unpack(self.request(C.STATUS).payload)

    def reset(self):
        """Reset the core's state and the link counters."""
        self.request(C.RESET)

    def load(self, program_addr: int):
        self.request(C.LOAD, program_addr.to_bytes(4, "little"))

    def run(self, steps: int):
        self.request(C.RUN, steps.to_bytes(4, "little"))


# --- command line ---------------------------------------------------------------------------------

def _selftest(c: "Client", nbytes: int, seed: int, out) -> bool:
    import random
    m = c.hello()
    out(f"manifest: version {m.version}, build {m.build_id:#010x}, PE kind {m.pe_kind}, "
        f"{m.lanes} lanes, {m.clk_hz} Hz, {m.baud} baud, max_data {m.max_data}, memories {m.mem_sizes}")
    c.reset()
    nbytes = min(nbytes, m.mem_sizes[0])
    data = random.Random(seed).randbytes(nbytes)
    t = time.monotonic()
    c.upload(P.MemoryId.TEST, 0, data)
    up = time.monotonic() - t
    back = c.read(P.MemoryId.TEST, 0, nbytes)
    s = c.status()
    ok = back == data
    out(f"upload of {nbytes} bytes verified by CRC in {up:.2f} s; read back "
        f"{'identical' if ok else 'DIFFERENT'}; status {s}; retransmissions {c.retransmissions}")
    return ok


def main(argv=None, out=print) -> int:
    """``python -m sw.client``: talk to a board (or the board model) from the command line."""
    import argparse

    from .record import RecordingTransport, ReplayMismatch, ReplayTransport
    ap = argparse.ArgumentParser(prog="python -m sw.client", description=main.__doc__)
    ap.add_argument("command", choices=["hello", "status", "reset", "selftest"])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--device", default="/dev/ttyUSB0",
                     help="pyserial URL: /dev/ttyUSB0, or socket://127.0.0.1:PORT for the board model")
    src.add_argument("--replay", metavar="PATH", help="replay a recorded session instead")
    ap.add_argument("--record", metavar="PATH", help="record the session (JSON lines, sw.record)")
    ap.add_argument("--baud", type=int, default=3_000_000)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--retries", type=int, default=4)
    ap.add_argument("--bytes", type=int, default=16384, help="selftest: bytes to upload")
    ap.add_argument("--seed", type=int, default=1, help="selftest: data seed")
    args = ap.parse_args(argv)
    try:
        if args.replay:
            transport = ReplayTransport(args.replay)
        else:
            try:
                transport = open_transport(args.device, args.baud)
            except TransportError as exc:
                raise LinkTimeout(f"no board answers at {args.device}: {exc}") from exc
        if args.record:
            transport = RecordingTransport(transport, args.record, command=args.command,
                                           bytes=args.bytes, seed=args.seed)
        with Client(transport, timeout=args.timeout, retries=args.retries, baud=args.baud) as c:
            if args.command == "hello":
                out(c.hello())
            elif args.command == "status":
                out(c.status())
            elif args.command == "reset":
                c.reset()
                out("reset")
            else:
                return 0 if _selftest(c, args.bytes, args.seed, out) else 1
        return 0
    except (LinkError, ReplayMismatch) as exc:
        out(f"error: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
