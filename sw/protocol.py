"""The host <-> board link protocol: frame format, commands, error codes, CRC-32, encode/decode.

This module is the one definition of the protocol. The host client (:mod:`sw.client`), the
gateware (:mod:`hw.link.protocol` takes its constants from here) and the gateware testbenches all
use it, so the two ends cannot drift apart. It imports nothing but the standard library and numpy
is not even needed; see ``docs/protocol.md`` for the prose description.

Frame (both directions, all multi-byte fields little-endian)::

    +------+------+-----+---------+----------------+-----------+
    | SYNC | TYPE | SEQ | LEN u16 | payload[LEN]   | CRC32 u32 |
    +------+------+-----+---------+----------------+-----------+

``SYNC`` is :data:`SYNC` (0xA5). ``CRC32`` is CRC-32/ISO-HDLC (the zlib/Ethernet CRC) over
``TYPE SEQ LEN payload`` (the sync byte is not covered). A request's ``TYPE`` is a
:class:`Command`; the reply echoes ``SEQ`` and has ``TYPE = command | 0x80`` on success or
:data:`ERROR_TYPE` with payload ``[code, command]`` on failure (:class:`ErrorCode`).
"""

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "SYNC", "HEADER_BYTES", "CRC_BYTES", "OVERHEAD", "ERROR_TYPE", "REPLY_FLAG", "PROTOCOL_VERSION",
    "MANIFEST_MAGIC", "DEFAULT_MAX_DATA", "ARG_BYTES",
    "Command", "ErrorCode", "MemoryId", "PEKind", "CoreMemory", "CORE_STRIDE", "CORE_INFO_MAGIC",
    "ISA_VERSION", "WeightFormat", "RunState", "RunError", "CoreInfo", "RunStatus", "load_arg", "run_arg",
    "crc32", "crc32_update", "encode_frame", "decode_frame", "FrameDecoder", "Frame", "FrameError",
    "max_payload", "write_request", "read_request", "crc_request", "Manifest", "Status",
]

SYNC = 0xA5
HEADER_BYTES = 5          # SYNC, TYPE, SEQ, LEN (2)
CRC_BYTES = 4
OVERHEAD = HEADER_BYTES + CRC_BYTES
REPLY_FLAG = 0x80
ERROR_TYPE = 0xFF
PROTOCOL_VERSION = 1
MANIFEST_MAGIC = 0x4B4E4C54  # b"TLNK" read little-endian
# Bytes of command arguments before WRITE data: memory id (1) and address (4).
ARG_BYTES = 5
# Data bytes carried by one WRITE or returned by one READ on the shipped bitstreams. The gateware
# takes it as a parameter and reports it in the manifest; the client reads it from there.
DEFAULT_MAX_DATA = 4096


class Command(enum.IntEnum):
    """Request types."""
    HELLO = 0x01   #: no payload; reply: the manifest (:class:`Manifest`)
    WRITE = 0x02   #: mem u8, addr u32, data[...]; reply: empty
    READ = 0x03    #: mem u8, addr u32, count u16 (<= max_data); reply: the bytes
    CRC = 0x04     #: mem u8, addr u32, count u32; reply: CRC-32 of the range, u32
    STATUS = 0x05  #: no payload; reply: :class:`Status`
    RESET = 0x06   #: no payload; resets the core and the link counters; reply: empty
    LOAD = 0x07    #: arg u32: token program address (bits 0..15), reset program address (16..31)
    RUN = 0x08     #: arg u32: steps (bits 0..15), fill (16..31); see :func:`run_arg`


class ErrorCode(enum.IntEnum):
    """Codes carried by an :data:`ERROR_TYPE` reply."""
    BAD_CRC = 0x01          #: frame CRC mismatch (reply sent once the line has been quiet)
    BAD_LENGTH = 0x02       #: LEN over the maximum, or wrong for the command
    TIMEOUT = 0x03          #: frame cut off: no byte for the inter-byte timeout
    UNKNOWN_COMMAND = 0x04  #: TYPE is not a :class:`Command`
    BAD_ADDRESS = 0x05      #: the address range is outside the memory
    BAD_MEMORY = 0x06       #: no memory with this id
    UNSUPPORTED = 0x07      #: command known but not supported by this bitstream (no core)
    BUSY = 0x08             #: RUN or LOAD while the core is running
    BAD_ARGUMENT = 0x09     #: LOAD / RUN argument out of range (addresses, step count, fill)
    NOT_LOADED = 0x0A       #: RUN before a LOAD


class MemoryId(enum.IntEnum):
    """Memories reachable with WRITE/READ/CRC. The link-only bitstream has the test memory."""
    TEST = 0x00


class CoreMemory(enum.IntEnum):
    """Memories of the accelerator bitstream (memory id = value).

    Every memory is byte-addressed with a power-of-two stride per word (:data:`CORE_STRIDE`,
    WMEM: :meth:`CoreInfo.wmem_stride`); a word holds its value little-endian in the low bytes,
    two's complement in its width for the signed memories (CMEM 18 bits, VMEM 36 bits). A word is
    written when the byte holding its top bit arrives, from the bytes of that word written before
    it in the same order (uploads write whole words, lowest byte first); bytes above the word's
    width are ignored on write and read as 0. INFO and CTRL are read-only (writes are ignored).
    While the core runs only INFO, CTRL and TOKMEM answer; the others wait for the run to end.
    """
    INFO = 0      #: :class:`CoreInfo`
    CTRL = 1      #: :class:`RunStatus`
    PMEM = 2      #: program, 16 bytes per instruction (``sw.isa.program_bytes``)
    WMEM = 3      #: packed weight words, stride ``CoreInfo.wmem_stride``
    CMEM = 4      #: 18-bit signed constants, 4 bytes each
    TMEM = 5      #: 18-bit scalar-unit tables, 4 bytes each
    SIGMEM = 6    #: 18-bit sigmoid table, 4 bytes each
    VMEM = 7      #: 36-bit signed vector words, 8 bytes each
    TOKMEM = 8    #: 16-bit token ids, 2 bytes each


#: Bytes per word on the link (WMEM's is in the INFO record).
CORE_STRIDE = {CoreMemory.INFO: 1, CoreMemory.CTRL: 1, CoreMemory.PMEM: 16, CoreMemory.CMEM: 4,
               CoreMemory.TMEM: 4, CoreMemory.SIGMEM: 4, CoreMemory.VMEM: 8, CoreMemory.TOKMEM: 2}
CORE_INFO_MAGIC = 0x524F4354   # b"TCOR" read little-endian
ISA_VERSION = 1


class WeightFormat(enum.IntEnum):
    """Weight packing of the GEMV engine (``sw.packing``)."""
    TWO_BIT = 0   #: "2bit"
    TRITS5 = 1    #: "trits5"


class RunState(enum.IntEnum):
    IDLE = 0
    RUNNING = 1
    RESETTING = 2


class RunError(enum.IntEnum):
    """Why the last run ended (``RunStatus.error``)."""
    NONE = 0
    NO_HALT = 1      #: the program ran past the end of PMEM without a HALT
    ABORTED = 2      #: a RESET stopped the run


@dataclass(frozen=True)
class CoreInfo:
    """Parameters of the core in a bitstream (memory INFO, read-only).

    Layout (little-endian): magic u32, isa_version u16, pe_kind u8, weight_format u8, lanes u16,
    rows u16, word_bits u16, k_max u16, vector_width u16, reserved u16, then the words of PMEM,
    WMEM, CMEM, TMEM, SIGMEM, VMEM, TOKMEM, u32 each (48 bytes in all).
    """
    magic: int
    isa_version: int
    pe_kind: int
    weight_format: int
    lanes: int
    rows: int
    word_bits: int
    k_max: int
    vector_width: int
    pmem_words: int
    wmem_words: int
    cmem_words: int
    tmem_words: int
    sigmem_words: int
    vmem_words: int
    tokmem_words: int

    _FMT = "<IHBBHHHHHxx7I"
    SIZE = 48

    @property
    def wmem_stride(self) -> int:
        """Link bytes per WMEM word: the word's bytes rounded up to a power of two."""
        return 1 << max(0, (-(-self.word_bits // 8) - 1).bit_length())

    def stride(self, mem: int) -> int:
        return self.wmem_stride if mem == CoreMemory.WMEM else CORE_STRIDE[CoreMemory(mem)]

    def mem_bytes(self) -> tuple[int, ...]:
        """Bytes of every memory (the manifest's ``mem_sizes`` of this core), by memory id."""
        words = {CoreMemory.INFO: self.SIZE, CoreMemory.CTRL: RunStatus.SIZE,
                 CoreMemory.PMEM: self.pmem_words, CoreMemory.WMEM: self.wmem_words,
                 CoreMemory.CMEM: self.cmem_words, CoreMemory.TMEM: self.tmem_words,
                 CoreMemory.SIGMEM: self.sigmem_words, CoreMemory.VMEM: self.vmem_words,
                 CoreMemory.TOKMEM: self.tokmem_words}
        return tuple(words[m] * self.stride(m) for m in CoreMemory)

    def pack(self) -> bytes:
        return struct.pack(self._FMT, self.magic, self.isa_version, self.pe_kind, self.weight_format,
                           self.lanes, self.rows, self.word_bits, self.k_max, self.vector_width,
                           self.pmem_words, self.wmem_words, self.cmem_words, self.tmem_words,
                           self.sigmem_words, self.vmem_words, self.tokmem_words)

    @classmethod
    def unpack(cls, data: bytes) -> "CoreInfo":
        if len(data) != cls.SIZE:
            raise FrameError(f"core info of {len(data)} bytes, expected {cls.SIZE}")
        return cls(*struct.unpack(cls._FMT, data))


@dataclass(frozen=True)
class RunStatus:
    """State of the core's runs (memory CTRL, read-only, 32 bytes).

    Layout (little-endian): state u8 (:class:`RunState`), error u8 (:class:`RunError`), loaded u8,
    reserved u8, steps_done u32 (steps finished in the current / last RUN), steps u32 (of that
    RUN), step_cycles u32 (cycles of the last finished step, program start to HALT),
    step_engine_cycles u32 (cycles of that step in which the GEMV engine issued a weight word),
    run_cycles u32 (cycles since the RUN started), tokens u32 (steps run since the last RESET),
    last_token u16, reserved u16.
    """
    state: int
    error: int
    loaded: int
    steps_done: int
    steps: int
    step_cycles: int
    step_engine_cycles: int
    run_cycles: int
    tokens: int
    last_token: int

    _FMT = "<BBBxIIIIIIHxx"
    SIZE = 32

    def pack(self) -> bytes:
        return struct.pack(self._FMT, self.state, self.error, self.loaded, self.steps_done, self.steps,
                           self.step_cycles, self.step_engine_cycles, self.run_cycles, self.tokens,
                           self.last_token)

    @classmethod
    def unpack(cls, data: bytes) -> "RunStatus":
        if len(data) != cls.SIZE:
            raise FrameError(f"run status of {len(data)} bytes, expected {cls.SIZE}")
        return cls(*struct.unpack(cls._FMT, data))


def load_arg(program_addr: int, reset_addr: int) -> int:
    """LOAD argument: where the token program and the reset program start in PMEM."""
    if not (0 <= program_addr < 1 << 16 and 0 <= reset_addr < 1 << 16):
        raise ValueError("program addresses must fit 16 bits")
    return program_addr | reset_addr << 16


def run_arg(steps: int, fill: int) -> int:
    """RUN argument. The core runs ``steps`` tokens: step ``t`` (from 0) takes ``TOKMEM[t]`` as its
    input token and, when ``t + 1 >= fill``, writes its output token (argmax, ``r2``) into
    ``TOKMEM[t + 1]``. A prompt of ``p`` tokens followed by ``g`` generated ones is ``steps = p + g
    - 1, fill = p``; one step on a host-chosen token is ``steps = 1, fill = 1``. The recurrent
    state carries over from step to step and from RUN to RUN until a RESET. The core answers the
    RUN once it has started (errors: BUSY, NOT_LOADED, BAD_ARGUMENT when ``steps`` or ``fill`` is
    0 or ``steps`` + 1 exceeds TOKMEM) and reports progress in CTRL (:class:`RunStatus`)."""
    if not (1 <= steps < 1 << 16 and 1 <= fill < 1 << 16):
        raise ValueError("steps and fill must be in 1..65535")
    return steps | fill << 16


class PEKind(enum.IntEnum):
    """Processing-element kind reported in the manifest."""
    NONE = 0           #: link-only bitstream, no accelerator core
    ADDER_TREE = 1
    BIT_SERIAL = 2
    LUT = 3


class FrameError(ValueError):
    """A byte string is not one well-formed frame."""


# --- CRC-32/ISO-HDLC: poly 0x04C11DB7 reflected (0xEDB88320), init and xorout 0xFFFFFFFF ---------

CRC32_POLY_REFLECTED = 0xEDB88320


def _make_table():
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ CRC32_POLY_REFLECTED if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc32_update(register: int, data: bytes) -> int:
    """Advance the raw CRC register (no init, no final xor) over ``data``.

    The gateware's :class:`hw.link.crc.CRC32` holds exactly this register.
    """
    for b in data:
        register = (register >> 8) ^ _TABLE[(register ^ b) & 0xFF]
    return register


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of ``data`` (equal to ``zlib.crc32``; check value 0xCBF43926)."""
    return crc32_update(0xFFFFFFFF, bytes(data)) ^ 0xFFFFFFFF


def max_payload(max_data: int = DEFAULT_MAX_DATA) -> int:
    """Largest LEN accepted by a board whose manifest reports ``max_data``."""
    return ARG_BYTES + max_data


# --- frames ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A decoded frame."""
    type: int
    seq: int
    payload: bytes

    @property
    def is_error(self) -> bool:
        return self.type == ERROR_TYPE

    @property
    def error_code(self) -> int | None:
        return self.payload[0] if self.is_error and self.payload else None


def encode_frame(type_: int, seq: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame."""
    if not 0 <= type_ <= 0xFF or not 0 <= seq <= 0xFF:
        raise ValueError(f"type and seq are bytes (got {type_!r}, {seq!r})")
    payload = bytes(payload)
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit the 16-bit LEN field")
    body = struct.pack("<BBH", type_, seq, len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack("<I", crc32(body))


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame; raise :class:`FrameError` on anything else."""
    data = bytes(data)
    if len(data) < OVERHEAD:
        raise FrameError(f"{len(data)} bytes is shorter than a frame ({OVERHEAD})")
    if data[0] != SYNC:
        raise FrameError(f"sync byte {data[0]:#04x}, expected {SYNC:#04x}")
    type_, seq, length = struct.unpack_from("<BBH", data, 1)
    if len(data) != OVERHEAD + length:
        raise FrameError(f"LEN {length} but {len(data) - OVERHEAD} payload bytes")
    body = data[1:HEADER_BYTES + length]
    (got,) = struct.unpack_from("<I", data, HEADER_BYTES + length)
    if got != crc32(body):
        raise FrameError(f"CRC {got:#010x}, computed {crc32(body):#010x}")
    return Frame(type_, seq, data[HEADER_BYTES:HEADER_BYTES + length])


class FrameDecoder:
    """Incremental decoder: feed bytes in any chunks, get whole frames out.

    Bytes before a sync byte are skipped. A header whose LEN exceeds ``max_len`` or a frame whose
    CRC does not match is dropped and the search for a sync byte restarts at the byte after the
    sync byte of the bad frame, so a frame hidden behind garbage is still found.

    Parameters
    ----------
    max_len : int
        Largest LEN considered plausible.
    """

    def __init__(self, max_len: int = 0xFFFF):
        self._max_len = max_len
        self._buf = bytearray()
        self.dropped = 0  #: bytes skipped or frames rejected, for diagnostics
        self.bad_crc = 0  #: frames rejected for their CRC

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while True:
            start = self._buf.find(SYNC)
            if start < 0:
                self.dropped += len(self._buf)
                self._buf.clear()
                return frames
            if start:
                self.dropped += start
                del self._buf[:start]
            if len(self._buf) < HEADER_BYTES:
                return frames
            (length,) = struct.unpack_from("<H", self._buf, 3)
            if length > self._max_len:
                self.dropped += 1
                del self._buf[:1]
                continue
            if len(self._buf) < OVERHEAD + length:
                return frames
            try:
                frames.append(decode_frame(self._buf[:OVERHEAD + length]))
            except FrameError:
                self.bad_crc += 1
                self.dropped += 1
                del self._buf[:1]
                continue
            del self._buf[:OVERHEAD + length]

    def reset(self):
        """Drop the bytes held for an incomplete frame (the client does this before a retry)."""
        self.dropped += len(self._buf)
        self._buf.clear()

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)


# --- command payloads -----------------------------------------------------------------------------

def write_request(mem: int, addr: int, data: bytes) -> bytes:
    """Payload of a WRITE."""
    return struct.pack("<BI", mem, addr) + bytes(data)


def read_request(mem: int, addr: int, count: int) -> bytes:
    """Payload of a READ."""
    return struct.pack("<BIH", mem, addr, count)


def crc_request(mem: int, addr: int, count: int) -> bytes:
    """Payload of a CRC."""
    return struct.pack("<BII", mem, addr, count)


@dataclass(frozen=True)
class Manifest:
    """What a bitstream says about itself (the HELLO reply).

    Layout (little-endian): magic u32, version u8, pe_kind u8, lanes u16, build_id u32,
    clk_hz u32, baud u32, max_data u16, n_mems u8, reserved u8, then n_mems x size u32
    (memory id = index).
    """
    magic: int
    version: int
    pe_kind: int
    lanes: int
    build_id: int
    clk_hz: int
    baud: int
    max_data: int
    mem_sizes: tuple[int, ...]

    _FMT = "<IBBHIIIHBx"

    def pack(self) -> bytes:
        return (struct.pack(self._FMT, self.magic, self.version, self.pe_kind, self.lanes,
                            self.build_id, self.clk_hz, self.baud, self.max_data,
                            len(self.mem_sizes))
                + b"".join(struct.pack("<I", s) for s in self.mem_sizes))

    @classmethod
    def unpack(cls, data: bytes) -> "Manifest":
        head = struct.calcsize(cls._FMT)
        if len(data) < head:
            raise FrameError(f"manifest of {len(data)} bytes, need at least {head}")
        magic, version, pe, lanes, build, clk, baud, max_data, n = struct.unpack_from(cls._FMT, data)
        if len(data) != head + 4 * n:
            raise FrameError(f"manifest lists {n} memories but is {len(data)} bytes long")
        sizes = struct.unpack_from(f"<{n}I", data, head)
        return cls(magic, version, pe, lanes, build, clk, baud, max_data, tuple(sizes))


@dataclass(frozen=True)
class Status:
    """The STATUS reply.

    Layout (little-endian): cycles u64 (clock cycles since the last reset), frames_ok u32,
    frames_err u32 (error replies sent), uart_errors u32 (framing errors and receive overruns),
    core_status u32 (bit 0: busy), core_cycles u32.
    """
    cycles: int
    frames_ok: int
    frames_err: int
    uart_errors: int
    core_status: int
    core_cycles: int

    _FMT = "<QIIIII"
    SIZE = 28

    def pack(self) -> bytes:
        return struct.pack(self._FMT, self.cycles, self.frames_ok, self.frames_err,
                           self.uart_errors, self.core_status, self.core_cycles)

    @classmethod
    def unpack(cls, data: bytes) -> "Status":
        if len(data) != cls.SIZE:
            raise FrameError(f"status of {len(data)} bytes, expected {cls.SIZE}")
        return cls(*struct.unpack(cls._FMT, data))
