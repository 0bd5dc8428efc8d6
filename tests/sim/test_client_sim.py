"""The host client against the board model (the link SoC under Verilator, bridged at bit level)."""

import random
import socket
import threading
import time

import pytest

from sim.board import MODEL_BUILD_ID, MODEL_MEM_SIZE, BoardModel
from sw import protocol as P
from sw.client import Client, LinkTimeout, RemoteError, VerifyError
from sw.record import RecordingTransport, ReplayMismatch, ReplayTransport
from sw.transport import open_transport

C, E = P.Command, P.ErrorCode
# The model's clock runs at whatever speed this computer manages (a few M cycles/s, far slower
# than the real 3 Mbaud line), so allow generous reply times against it.
MODEL_TIMEOUT = 3.0


def _data(n, seed):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


class FlakyTransport:
    """Flips one random bit in a fraction of the chunks going either way."""

    def __init__(self, inner, p_tx, p_rx, seed=0):
        self._inner, self.p_tx, self.p_rx = inner, p_tx, p_rx
        self.rng = random.Random(seed)
        self.flipped_tx = self.flipped_rx = 0

    def _flip(self, data):
        b = bytearray(data)
        i = self.rng.randrange(len(b))
        b[i] ^= 1 << self.rng.randrange(8)
        return bytes(b)

    def write(self, data):
        if data and self.rng.random() < self.p_tx:
            self.flipped_tx += 1
            data = self._flip(data)
        self._inner.write(data)

    def read(self, n, timeout):
        data = self._inner.read(n, timeout)
        if data and self.rng.random() < self.p_rx:
            self.flipped_rx += 1
            data = self._flip(data)
        return data

    def close(self):
        self._inner.close()


def test_hello_write_read_crc():
    with BoardModel() as url, Client.open(url, timeout=MODEL_TIMEOUT) as c:
        m = c.hello()
        assert (m.magic, m.version, m.pe_kind, m.build_id) == (P.MANIFEST_MAGIC, 1, P.PEKind.NONE, MODEL_BUILD_ID)
        assert m.mem_sizes == (MODEL_MEM_SIZE,) and m.max_data == 4096 and m.baud == 3_000_000
        data = _data(9000, 1)  # three frames, the last one partial
        seen = []
        c.write(P.MemoryId.TEST, 1234, data, progress=lambda done, total: seen.append((done, total)))
        assert seen == [(4096, 9000), (8192, 9000), (9000, 9000)]
        assert c.read(0, 1234, 9000) == data
        assert c.crc(0, 1234, 9000) == P.crc32(data)
        c.verify(0, 1234, data)
        assert c.read(0, 1234 + 4095, 3) == data[4095:4098]
        with pytest.raises(VerifyError):
            c.verify(0, 1234, data[:-1] + bytes([data[-1] ^ 1]))
        s = c.status()
        assert s.frames_err == 0 and s.uart_errors == 0 and s.frames_ok >= 8
        assert c.retransmissions == 0


def test_board_errors_reach_the_host():
    with BoardModel() as url, Client.open(url, timeout=MODEL_TIMEOUT) as c:
        with pytest.raises(RemoteError, match="UNSUPPORTED to RUN") as ei:
            c.run(1)
        assert ei.value.code == E.UNSUPPORTED
        with pytest.raises(RemoteError, match="UNSUPPORTED to LOAD"):
            c.load(0)
        with pytest.raises(RemoteError, match="BAD_ADDRESS") as ei:
            c.request(C.READ, P.read_request(0, MODEL_MEM_SIZE - 1, 2))  # bypasses the host check
        with pytest.raises(RemoteError, match="BAD_MEMORY"):
            c.request(C.CRC, P.crc_request(1, 0, 1))
        with pytest.raises(RemoteError, match="UNKNOWN_COMMAND"):
            c.request(0x30)
        c.hello()
        with pytest.raises(ValueError, match="do not fit"):
            c.write(0, MODEL_MEM_SIZE - 2, b"abc")  # caught on the host before sending
        c.reset()
        s = c.status()
        assert (s.frames_ok, s.frames_err) == (0, 0)
        assert c.retransmissions == 0  # none of these errors is retried


def test_bit_flips_both_ways_are_retried():
    with BoardModel() as url:
        flaky = FlakyTransport(open_transport(url), p_tx=0.25, p_rx=0.25, seed=3)
        # 512-byte frames take ~0.03 s on the model; a sync byte hit on the way out gets no reply.
        c = Client(flaky, timeout=1.0, retries=12)
        data = _data(5000, 2)
        c.hello()
        c.write(0, 100, data, chunk=512)
        flaky.p_tx = flaky.p_rx = 0.0
        assert c.read(0, 100, len(data)) == data
        c.verify(0, 100, data)
        assert flaky.flipped_tx > 0 and flaky.flipped_rx > 0
        assert c.retransmissions > 0
        c.close()


def test_truncated_frame_and_truncated_upload():
    with BoardModel() as url, Client.open(url, timeout=MODEL_TIMEOUT) as c:
        c.hello()
        # A frame cut off on the wire: the board times out, says so, and keeps serving.
        frame = P.encode_frame(C.WRITE, 200, P.write_request(0, 0, bytes(100)))
        c._t.write(frame[:60])
        dec = P.FrameDecoder()
        replies = []
        deadline = time.monotonic() + MODEL_TIMEOUT
        while not replies and time.monotonic() < deadline:
            replies = dec.feed(c._t.read(100, 0.1))
        assert replies and replies[0].type == P.ERROR_TYPE
        assert replies[0].payload == bytes([E.TIMEOUT, C.WRITE]) and replies[0].seq == 200
        # An upload that lost its tail is caught by the CRC check.
        data = _data(5000, 4)
        c.write(0, 0, data[:4900])
        with pytest.raises(VerifyError, match="board CRC"):
            c.verify(0, 0, data)
        c.upload(0, 0, data)  # the full upload verifies
        assert c.status().frames_err == 1


def test_board_stopped_mid_session():
    board = BoardModel()
    with board as url:
        c = Client.open(url, timeout=0.3, retries=2)
        c.hello()
        board.stop()
        t = time.monotonic()
        with pytest.raises(LinkTimeout, match="STATUS"):
            c.status()
        assert time.monotonic() - t < 3 * (0.3 + 0.1) + 0.5
        c.close()
    assert "stopped by signal" in board.log and board.cycles > 1000  # HELLO took ~300 bit times


def test_nothing_listening():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    t = time.monotonic()
    with pytest.raises(LinkTimeout, match="no board answers"):
        Client.open(f"socket://127.0.0.1:{port}", timeout=0.3, retries=2)
    assert time.monotonic() - t < 2.0


def test_silent_board():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = bytearray()

    def swallow():
        conn, _ = srv.accept()
        conn.settimeout(5)
        try:
            while chunk := conn.recv(4096):
                got.extend(chunk)
        except OSError:
            pass
        conn.close()

    th = threading.Thread(target=swallow, daemon=True)
    th.start()
    c = Client.open(f"socket://127.0.0.1:{srv.getsockname()[1]}", timeout=0.3, retries=2)
    t = time.monotonic()
    with pytest.raises(LinkTimeout, match="HELLO: no valid reply after 3 attempts"):
        c.hello()
    elapsed = time.monotonic() - t
    assert 0.9 <= elapsed < 3 * (0.3 + 0.05) + 0.5, elapsed
    c.close()
    th.join(5)
    srv.close()
    assert bytes(got) == P.encode_frame(C.HELLO, 1) * 3  # the same frame, sent three times


def _session(client):
    out = {"manifest": client.hello()}
    data = _data(5000, 5)
    client.upload(0, 64, data)
    out["read"] = client.read(0, 64, 5000)
    out["crc"] = client.crc(0, 0, 8192)
    try:
        client.run(5)
    except RemoteError as exc:
        out["run"] = exc.code
    out["status"] = client.status()
    return out


def test_record_then_replay(tmp_path):
    path = tmp_path / "session.jsonl"
    with BoardModel() as url:
        rec = RecordingTransport(open_transport(url), path, note="board model")
        live = _session(Client(rec, timeout=MODEL_TIMEOUT))
        rec.close()
    assert live["read"] == _data(5000, 5) and live["run"] == E.UNSUPPORTED
    lines = path.read_text().splitlines()
    assert '"meta"' in lines[0] and all('"dir"' in line for line in lines[1:])
    replay = ReplayTransport(path)
    assert replay.meta["note"] == "board model"
    again = _session(Client(replay, timeout=MODEL_TIMEOUT))
    assert again == live and replay.finished
    # A client that does something else is told so.
    other = Client(ReplayTransport(path), timeout=0.1, retries=0)
    with pytest.raises(ReplayMismatch):
        other.status()


def test_command_line_selftest_recorded_and_replayed(tmp_path):
    from sw.client import main
    path = tmp_path / "selftest.jsonl"
    lines = []
    with BoardModel() as url:
        assert main(["selftest", "--device", url, "--record", str(path), "--bytes", "5000",
                     "--timeout", str(MODEL_TIMEOUT)], out=lines.append) == 0, lines
    assert "read back identical" in lines[-1]
    lines.clear()
    assert main(["selftest", "--replay", str(path), "--bytes", "5000"], out=lines.append) == 0, lines
    # Other data than recorded: the replay says the client diverged.
    assert main(["selftest", "--replay", str(path), "--bytes", "5000", "--seed", "7"],
                out=lines.append) == 2
    assert "error: record" in lines[-1]


def test_committed_session_still_replays():
    # A session recorded once with `python -m sw.client --device socket://... --record
    # tests/data/link_session_model.jsonl selftest --bytes 3000` against the board model. The
    # client must still send exactly those bytes and accept those replies: any change to the
    # frame format, the commands or the client's sequence shows up here. (Re-record on purpose
    # when the protocol version changes; a session from a real board can be added the same way.)
    from pathlib import Path

    from sw.client import main
    path = Path(__file__).parent.parent / "data" / "link_session_model.jsonl"
    lines = []
    assert main(["selftest", "--replay", str(path), "--bytes", "3000"], out=lines.append) == 0, lines
