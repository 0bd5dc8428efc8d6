"""The protocol definition (sw/protocol.py) and the gateware CRC that must equal it."""

import random
import struct
import zlib

import pytest

from sw import protocol as P


def test_crc32_check_value_and_zlib():
    assert P.crc32(b"123456789") == 0xCBF43926
    rng = random.Random(1)
    for n in [0, 1, 2, 7, 64, 1000]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert P.crc32(data) == zlib.crc32(data)


def test_frame_roundtrip():
    for type_, seq, payload in [(P.Command.HELLO, 0, b""), (P.Command.WRITE, 255, bytes(range(256)) * 16)]:
        raw = P.encode_frame(type_, seq, payload)
        assert len(raw) == P.OVERHEAD + len(payload)
        assert raw[0] == P.SYNC and struct.unpack_from("<H", raw, 3)[0] == len(payload)
        f = P.decode_frame(raw)
        assert (f.type, f.seq, f.payload) == (type_, seq, payload)


def test_decode_rejects_every_single_bit_flip():
    raw = P.encode_frame(P.Command.READ, 7, P.read_request(0, 0x1234, 100))
    for bit in range(len(raw) * 8):
        bad = bytearray(raw)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(P.FrameError):
            P.decode_frame(bytes(bad))


def test_encode_validates():
    with pytest.raises(ValueError):
        P.encode_frame(0x100, 0)
    with pytest.raises(ValueError):
        P.encode_frame(1, -1)
    with pytest.raises(ValueError):
        P.encode_frame(1, 0, bytes(0x10000))


def test_decoder_finds_frames_in_garbage_any_chunking():
    rng = random.Random(2)
    frames = [P.encode_frame(rng.randrange(1, 9), i, bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
              for i in range(30)]
    stream = bytearray()
    for f in frames:
        # garbage without sync bytes between frames
        stream += bytes(rng.choice([b for b in range(256) if b != P.SYNC]) for _ in range(rng.randrange(5)))
        stream += f
    dec = P.FrameDecoder(max_len=64)
    out = []
    pos = 0
    while pos < len(stream):
        n = rng.randrange(1, 50)
        out += dec.feed(bytes(stream[pos:pos + n]))
        pos += n
    assert [P.encode_frame(f.type, f.seq, f.payload) for f in out] == frames


def test_decoder_fuzzed_garbage_never_crashes_and_resyncs():
    rng = random.Random(3)
    dec = P.FrameDecoder(max_len=P.max_payload())
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(100)))
        if rng.random() < 0.3:
            junk += bytes([P.SYNC]) + bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        for f in dec.feed(junk):  # random frames with a valid CRC are astronomically rare
            pytest.fail(f"garbage decoded as {f}")
        with pytest.raises(P.FrameError):
            P.decode_frame(junk)
    # Garbage may end in a plausible header that waits for up to max_len bytes; once those came (or
    # the client gave up waiting and reset the decoder) real frames come out again.
    good = P.encode_frame(P.Command.STATUS, 9)
    got = dec.feed(good * (P.max_payload() // len(good) + 2))
    assert got and got[-1] == P.Frame(P.Command.STATUS, 9, b"")
    dec.feed(bytes([P.SYNC, 1, 2, 0xFF, 0x0F]))
    dec.reset()
    assert dec.feed(good) == [P.Frame(P.Command.STATUS, 9, b"")]


def test_manifest_and_status_pack():
    m = P.Manifest(P.MANIFEST_MAGIC, 1, 0, 0, 0x1234, 75_000_000, 3_000_000, 4096, (65536, 16))
    assert P.Manifest.unpack(m.pack()) == m
    assert len(m.pack()) == 24 + 8
    with pytest.raises(P.FrameError):
        P.Manifest.unpack(m.pack()[:-1])
    s = P.Status(1 << 40, 2, 3, 4, 5, 6)
    assert len(s.pack()) == P.Status.SIZE and P.Status.unpack(s.pack()) == s


def test_request_payloads():
    assert P.write_request(0, 0x10, b"ab") == b"\x00\x10\x00\x00\x00ab"
    assert len(P.read_request(0, 0, 4096)) == 7
    assert len(P.crc_request(0, 0, 1 << 20)) == 9
    assert P.max_payload(4096) == 4101


def test_gateware_crc_equals_protocol_crc():
    from amaranth.sim import Simulator

    from hw.link.crc import CRC32

    dut = CRC32()
    rng = random.Random(4)
    messages = [b"123456789", b"", bytes(rng.randrange(256) for _ in range(300))]

    async def bench(ctx):
        for msg in messages:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for i, b in enumerate(msg):
                ctx.set(dut.en, 1)
                ctx.set(dut.data, b)
                await ctx.tick()
                ctx.set(dut.en, 0)
                if rng.random() < 0.2:
                    ctx.set(dut.data, rng.randrange(256))  # ignored while en is low
                    await ctx.tick()
            assert ctx.get(dut.crc) == P.crc32(msg), msg[:9]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
