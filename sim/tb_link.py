"""cocotb testbench for :class:`hw.link.soc_link.SocLink`: frames in at bit level on ``rx``, replies
decoded from ``tx``, using the one protocol definition in :mod:`sw.protocol`.

Parameters: ``divisor``, ``mem_size``, ``max_data``, ``timeout_cycles``, ``manifest`` (hex of the
expected HELLO payload).
"""

import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from sim.tb import params, reset
from sim.tb_uart import CLK_PS, uart_recv, uart_send
from sw import protocol as P

C, E = P.Command, P.ErrorCode


class Link:
    """Drives the SoC's pins like the host would."""

    def __init__(self, dut):
        p = params()
        self.dut = dut
        self.div = p["divisor"]
        self.mem_size = p["mem_size"]
        self.max_data = p["max_data"]
        self.timeout = p["timeout_cycles"]
        self.manifest = bytes.fromhex(p["manifest"])
        self.bit_ps = self.div * CLK_PS
        self.seq = 0

    async def start(self):
        self.dut.rx.value = 1
        await reset(self.dut)
        await ClockCycles(self.dut.clk, 4)

    async def send_raw(self, data: bytes):
        await uart_send(self.dut.rx, data, self.bit_ps)

    async def recv_frame(self, timeout_cycles=None) -> P.Frame:
        t = timeout_cycles or (self.timeout + 20 * self.div * (self.max_data + 40))
        head = await uart_recv(self.dut, self.dut.tx, P.HEADER_BYTES, self.div, timeout_cycles=t)
        assert head[0] == P.SYNC, f"reply starts with {head[0]:#04x}"
        n = head[3] | head[4] << 8
        rest = await uart_recv(self.dut, self.dut.tx, n + P.CRC_BYTES, self.div, timeout_cycles=t)
        return P.decode_frame(bytes(head + rest))  # raises on a bad CRC from the gateware

    async def exchange(self, raw: bytes, timeout_cycles=None) -> P.Frame:
        """Send ``raw`` and return the reply (the receiver runs while the request is sent)."""
        task = cocotb.start_soon(self.recv_frame(timeout_cycles))
        await self.send_raw(raw)
        return await task

    async def call(self, cmd, payload=b"", expect_error=None) -> P.Frame:
        self.seq = (self.seq + 1) & 0xFF
        reply = await self.exchange(P.encode_frame(cmd, self.seq, payload))
        assert reply.seq == self.seq, f"reply seq {reply.seq}, sent {self.seq}"
        if expect_error is None:
            assert reply.type == cmd | P.REPLY_FLAG, f"{C(cmd).name}: reply {reply}"
        else:
            assert reply.type == P.ERROR_TYPE, f"{C(cmd).name if cmd in C._value2member_map_ else cmd}: expected error {expect_error.name}, got {reply}"
            assert reply.payload == bytes([expect_error, cmd]), \
                f"error payload {reply.payload.hex()}, expected {expect_error.name} for {cmd:#x}"
        return reply

    async def expect_error_reply(self, code, seq=None, cmd=None):
        reply = await self.recv_frame()
        assert reply.type == P.ERROR_TYPE and reply.payload[0] == code, \
            f"expected {code.name}, got {reply}"
        if seq is not None:
            assert reply.seq == seq
        if cmd is not None:
            assert reply.payload[1] == cmd
        return reply

    async def alive(self):
        """The link still serves a good frame."""
        r = await self.call(C.HELLO)
        assert r.payload == self.manifest


@cocotb.test()
async def hello_returns_manifest(dut):
    link = Link(dut)
    await link.start()
    r = await link.call(C.HELLO)
    m = P.Manifest.unpack(r.payload)
    assert r.payload == link.manifest
    assert m.magic == P.MANIFEST_MAGIC and m.version == P.PROTOCOL_VERSION
    assert m.mem_sizes == (link.mem_size,) and m.max_data == link.max_data


@cocotb.test()
async def write_read_crc(dut):
    link = Link(dut)
    await link.start()
    rng = random.Random(10)
    image = bytearray(rng.randrange(256) for _ in range(link.mem_size))
    for a in range(0, link.mem_size, link.max_data):  # fill with max-size frames
        await link.call(C.WRITE, P.write_request(0, a, image[a:a + link.max_data]))
    for _ in range(4):
        a = rng.randrange(link.mem_size - 1)
        n = rng.randrange(1, min(link.max_data, link.mem_size - a) + 1)
        data = bytes(rng.randrange(256) for _ in range(n))
        image[a:a + n] = data
        await link.call(C.WRITE, P.write_request(0, a, data))
        r = await link.call(C.READ, P.read_request(0, a, n))
        assert r.payload == data, f"read back {r.payload.hex()} != {data.hex()}"
    r = await link.call(C.READ, P.read_request(0, link.mem_size - link.max_data, link.max_data))
    assert r.payload == image[-link.max_data:]
    r = await link.call(C.CRC, P.crc_request(0, 0, link.mem_size))
    assert int.from_bytes(r.payload, "little") == P.crc32(image)
    r = await link.call(C.CRC, P.crc_request(0, 5, 17))
    assert int.from_bytes(r.payload, "little") == P.crc32(image[5:22])
    r = await link.call(C.CRC, P.crc_request(0, 3, 0))
    assert int.from_bytes(r.payload, "little") == P.crc32(b"")
    r = await link.call(C.READ, P.read_request(0, 9, 0))
    assert r.payload == b""
    await link.call(C.WRITE, P.write_request(0, 9, b""))  # empty write is fine


@cocotb.test()
async def back_to_back_frames(dut):
    link = Link(dut)
    await link.start()
    frames = [P.encode_frame(C.STATUS, 1), P.encode_frame(C.HELLO, 2),
              P.encode_frame(C.WRITE, 3, P.write_request(0, 0, b"\x11\x22\x33")),
              P.encode_frame(C.READ, 4, P.read_request(0, 0, 3)), P.encode_frame(C.HELLO, 5)]

    async def collect():
        return [await link.recv_frame() for _ in frames]
    task = cocotb.start_soon(collect())
    await link.send_raw(b"".join(frames))
    replies = await task
    assert [r.seq for r in replies] == [1, 2, 3, 4, 5]
    assert [r.type for r in replies] == [t | P.REPLY_FLAG for t in (C.STATUS, C.HELLO, C.WRITE, C.READ, C.HELLO)]
    assert replies[3].payload == b"\x11\x22\x33"


@cocotb.test()
async def bad_crc_is_answered_and_nothing_written(dut):
    link = Link(dut)
    await link.start()
    await link.call(C.WRITE, P.write_request(0, 0, b"\xAA" * 8))
    raw = bytearray(P.encode_frame(C.WRITE, 77, P.write_request(0, 0, b"\x55" * 8)))
    raw[9] ^= 0x10  # a data byte
    await link.send_raw(bytes(raw))
    r = await link.expect_error_reply(E.BAD_CRC, seq=77, cmd=C.WRITE)
    r = await link.call(C.READ, P.read_request(0, 0, 8))
    assert r.payload == b"\xAA" * 8, "a frame with a bad CRC was written"
    raw = bytearray(P.encode_frame(C.HELLO, 78))
    raw[-1] ^= 0x80  # the CRC itself
    await link.send_raw(bytes(raw))
    await link.expect_error_reply(E.BAD_CRC, seq=78)
    await link.alive()


@cocotb.test()
async def bad_length(dut):
    link = Link(dut)
    await link.start()
    # LEN over the maximum: the rest is discarded until the line is quiet, then the error.
    over = P.max_payload(link.max_data) + 1
    raw = bytes([P.SYNC, C.WRITE, 12, over & 0xFF, over >> 8]) + bytes(range(30))
    await link.send_raw(raw)
    await link.expect_error_reply(E.BAD_LENGTH, seq=12, cmd=C.WRITE)
    raw = bytes([P.SYNC, C.WRITE, 13, 0xFF, 0xFF]) + bytes([P.SYNC]) * 20  # sync bytes inside
    await link.send_raw(raw)
    await link.expect_error_reply(E.BAD_LENGTH, seq=13)
    await link.alive()
    # LEN wrong for the command (frames otherwise fine): answered at once.
    await link.call(C.HELLO, b"\x00", expect_error=E.BAD_LENGTH)
    await link.call(C.STATUS, b"\x00\x00", expect_error=E.BAD_LENGTH)
    await link.call(C.RESET, b"\x00", expect_error=E.BAD_LENGTH)
    await link.call(C.READ, P.read_request(0, 0, 1) + b"\x00", expect_error=E.BAD_LENGTH)
    await link.call(C.READ, P.read_request(0, 0, link.max_data + 1), expect_error=E.BAD_LENGTH)
    await link.call(C.CRC, P.crc_request(0, 0, 1)[:-1], expect_error=E.BAD_LENGTH)
    await link.call(C.WRITE, b"\x00\x00\x00\x00", expect_error=E.BAD_LENGTH)
    await link.call(C.RUN, b"", expect_error=E.BAD_LENGTH)
    await link.alive()


@cocotb.test()
async def bad_address_and_memory(dut):
    link = Link(dut)
    await link.start()
    size = link.mem_size
    await link.call(C.WRITE, P.write_request(0, 0, b"\x5A" * 4))
    await link.call(C.WRITE, P.write_request(0, size - 2, b"abc"), expect_error=E.BAD_ADDRESS)
    await link.call(C.WRITE, P.write_request(0, 0xFFFFFFFF, b"ab"), expect_error=E.BAD_ADDRESS)
    await link.call(C.READ, P.read_request(0, size, 1), expect_error=E.BAD_ADDRESS)
    await link.call(C.READ, P.read_request(0, 0xFFFFFFF0, 32), expect_error=E.BAD_ADDRESS)
    await link.call(C.CRC, P.crc_request(0, 1, size), expect_error=E.BAD_ADDRESS)
    await link.call(C.CRC, P.crc_request(0, 0xFFFFFFFF, 0xFFFFFFFF), expect_error=E.BAD_ADDRESS)
    await link.call(C.WRITE, P.write_request(1, 0, b"a"), expect_error=E.BAD_MEMORY)
    await link.call(C.READ, P.read_request(0xFF, 0, 1), expect_error=E.BAD_MEMORY)
    await link.call(C.CRC, P.crc_request(3, 0, 1), expect_error=E.BAD_MEMORY)
    r = await link.call(C.READ, P.read_request(0, size - 4, 4))   # the last bytes are in range
    r = await link.call(C.READ, P.read_request(0, 0, 4))
    assert r.payload == b"\x5A" * 4, "a rejected write changed memory"


@cocotb.test()
async def unknown_and_unsupported(dut):
    link = Link(dut)
    await link.start()
    for t in (0x00, 0x09, 0x42, 0x82, 0xFF):
        await link.call(t, b"", expect_error=E.UNKNOWN_COMMAND)
    await link.call(C.RUN, (1).to_bytes(4, "little"), expect_error=E.UNSUPPORTED)
    await link.call(C.LOAD, (0).to_bytes(4, "little"), expect_error=E.UNSUPPORTED)
    await link.call(C.RESET)
    await link.alive()


@cocotb.test()
async def truncated_frame_times_out(dut):
    link = Link(dut)
    await link.start()
    raw = P.encode_frame(C.WRITE, 33, P.write_request(0, 0, bytes(20)))
    for cut in (2, 5, 12, len(raw) - 1):  # in the header, at the payload, mid-payload, in the CRC
        await link.send_raw(raw[:cut])
        r = await link.expect_error_reply(E.TIMEOUT)
        if cut > 3:
            assert r.seq == 33 and r.payload[1] == C.WRITE
        await link.alive()


@cocotb.test()
async def recovers_after_garbage(dut):
    link = Link(dut)
    await link.start()
    rng = random.Random(11)
    for round_ in range(4):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(5, 60)))
        if round_ % 2:
            junk = bytes(b for b in junk if b != P.SYNC)  # pure noise: skipped silently
        await link.send_raw(junk)
        # Garbage that contained a sync byte may earn error replies (never anything else);
        # read them until the line stays quiet for a timeout plus a reply.
        while True:
            try:
                r = await link.recv_frame(timeout_cycles=link.timeout + 40 * link.div * 10)
            except AssertionError as exc:
                assert "no start bit" in str(exc), exc
                await RisingEdge(dut.clk)  # leave the read-only phase the receiver gave up in
                break
            assert r.type == P.ERROR_TYPE, f"garbage earned a non-error reply {r}"
            assert round_ % 2 == 0, f"noise without a sync byte earned a reply {r}"
        await link.alive()


@cocotb.test()
async def status_counters_and_reset(dut):
    link = Link(dut)
    await link.start()
    await link.call(C.RESET)
    s0 = P.Status.unpack((await link.call(C.STATUS)).payload)
    assert (s0.frames_ok, s0.frames_err, s0.uart_errors) == (0, 0, 0)
    await link.call(C.HELLO)
    await link.call(0x55, expect_error=E.UNKNOWN_COMMAND)
    # A byte with a low stop bit: counted as a UART error, dropped.
    await uart_send(dut.rx, [0x00], link.bit_ps, stop_bits=[0])
    s1 = P.Status.unpack((await link.call(C.STATUS)).payload)
    assert (s1.frames_ok, s1.frames_err, s1.uart_errors) == (2, 1, 1), s1
    assert s1.cycles > s0.cycles and s1.core_status == 0 and s1.core_cycles == 0
    await link.call(C.RESET)
    s2 = P.Status.unpack((await link.call(C.STATUS)).payload)
    assert (s2.frames_ok, s2.frames_err, s2.uart_errors) == (0, 0, 0) and s2.cycles < s1.cycles
