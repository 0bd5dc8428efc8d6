"""A functional double of the accelerator board, for fast host-runtime tests.

:class:`FakeBoard` is a transport (``write(frame)``, ``read(max_bytes, timeout)``, ``close()``,
as :mod:`sw.transport`): it decodes the request frames the client writes and queues the replies
the accelerator bitstream is specified to send (:mod:`sw.protocol`, ``docs/protocol.md``):

* HELLO: the manifest (memory sizes from the INFO record, ``CoreInfo.mem_bytes()``);
* WRITE / READ / CRC on byte-addressed memories with the :class:`~sw.protocol.CoreMemory` rules:
  a word is committed when the byte holding its top bit arrives, from the bytes of that word
  written so far; bits above the word's width are dropped on write and read as 0; INFO and CTRL
  are read-only; BAD_LENGTH / BAD_MEMORY / BAD_ADDRESS as the gateware answers them;
* LOAD / RUN / RESET with BUSY, BAD_ARGUMENT, NOT_LOADED; a RUN executes its steps with
  :class:`sw.isa_sim.Core` on the memory images the host sent, decoded back here from the link
  bytes (independently of the host's encoder), and reports progress in CTRL
  (:class:`~sw.protocol.RunStatus`). Time is modelled by requests: every request that arrives
  while the core runs lets ``steps_per_request`` steps finish first, so a host that polls sees
  tokens appear one by one. While it runs, only INFO, CTRL and TOKMEM answer; any other memory
  access waits for the run to end (the run is finished first).

Fault injection: :attr:`silent_after` (stop answering after that many replies),
:attr:`flip_reply` (indices of replies that get one bit flipped on the way),
:attr:`corrupt_byte` (``(mem, offset)``: that stored byte gets a bit flipped whenever a write
commits its word, so a CRC verify of it fails), :attr:`stall` (the core makes no progress).
"""

from __future__ import annotations

import struct
import time
import types

import numpy as np

from sw import protocol as P
from sw.compiler import WeightImage
from sw.isa import Op, decode
from sw.isa_sim import Core

M = P.CoreMemory
E = P.ErrorCode
C = P.Command

# Word widths of the memories (bits), as specified in sw.protocol.CoreMemory.
_WIDTH = {M.PMEM: 128, M.CMEM: 18, M.TMEM: 18, M.SIGMEM: 18, M.VMEM: 36, M.TOKMEM: 16}
_FORMAT = {P.WeightFormat.TWO_BIT: "2bit", P.WeightFormat.TRITS5: "trits5"}


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def info_for(compiled, *, tokmem_words: int = 64, vector_width: int = 16, pe_kind: int = P.PEKind.ADDER_TREE,
             **override) -> P.CoreInfo:
    """A CoreInfo whose memories hold ``compiled`` (each rounded up to a power of two);
    ``override`` replaces any field."""
    s = compiled.summary()
    w = compiled.weights
    fields = dict(magic=P.CORE_INFO_MAGIC, isa_version=P.ISA_VERSION, pe_kind=int(pe_kind),
                  weight_format=int({"2bit": P.WeightFormat.TWO_BIT, "trits5": P.WeightFormat.TRITS5}[w.fmt]),
                  lanes=w.lanes, rows=w.rows, word_bits=w.word_bits, k_max=_pow2(s["k_max"]),
                  vector_width=vector_width, pmem_words=_pow2(s["pmem_words"]),
                  wmem_words=_pow2(s["wmem_words"]), cmem_words=_pow2(s["cmem_words"]),
                  tmem_words=_pow2(s["tmem_words"]), sigmem_words=_pow2(s["sigmem_words"]),
                  vmem_words=_pow2(s["vmem_words"]), tokmem_words=tokmem_words)
    fields.update(override)
    return P.CoreInfo(**fields)


class FakeBoard:
    """The accelerator board as a transport object (see the module docstring).

    Parameters
    ----------
    info : sw.protocol.CoreInfo
        The core this board reports and implements (memory sizes, engine shape).
    clk_hz, baud, max_data, build_id
        Manifest fields.
    steps_per_request : int
        Steps a running core finishes per request received (models time passing).
    """

    def __init__(self, info: P.CoreInfo, *, clk_hz: int = 75_000_000, baud: int = 3_000_000,
                 max_data: int = P.DEFAULT_MAX_DATA, build_id: int = 0x0DDBA11, steps_per_request: int = 1):
        self.info = info
        self.url = "fake://board"
        self.manifest = P.Manifest(P.MANIFEST_MAGIC, P.PROTOCOL_VERSION, info.pe_kind, info.lanes, build_id,
                                   clk_hz, baud, max_data, info.mem_bytes())
        self.max_data = max_data
        self.steps_per_request = steps_per_request
        sizes = info.mem_bytes()
        self.image = {m: np.zeros(sizes[m], dtype=np.uint8) for m in M if m not in (M.INFO, M.CTRL)}
        self.staging = {m: np.zeros(sizes[m], dtype=np.uint8) for m in self.image}
        self.top_word: dict[int, int] = {}   # words below this index have been written
        self._dec = P.FrameDecoder(max_len=0xFFFF)
        self._out = bytearray()
        self.requests: list[P.Frame] = []   #: every request frame decoded, in order
        self.replies = 0
        self.closed = False
        # fault injection
        self.silent_after: int | None = None
        self.flip_reply: set[int] = set()
        self.corrupt_byte: tuple[int, int] | None = None
        self.stall = False
        # core state
        self.loaded = False
        self.prog_addr = self.reset_addr = 0
        self.status = P.RunStatus(P.RunState.IDLE, P.RunError.NONE, 0, 0, 0, 0, 0, 0, 0, 0)
        self._run: dict | None = None
        self._core: Core | None = None
        self._programs: dict[int, list | None] = {}
        self.frames_ok = self.frames_err = 0
        self.cycles = 0

    # ------------------------------------------------------------------ transport interface
    def write(self, data: bytes):
        if self.closed:
            raise OSError("fake board closed")
        bad = self._dec.bad_crc
        frames = self._dec.feed(bytes(data))
        if self._dec.bad_crc > bad:
            self._reply(P.ERROR_TYPE, 0, bytes([E.BAD_CRC, 0]))
        for f in frames:
            self.requests.append(f)
            self._advance(self.steps_per_request)
            t, payload = self._handle(f)
            self._reply(t, f.seq, payload)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        if not self._out:
            time.sleep(max(0.0, timeout))
            return b""
        out = bytes(self._out[:max_bytes])
        del self._out[:max_bytes]
        return out

    def close(self):
        self.closed = True

    def sent(self, cmd: int) -> list[P.Frame]:
        """The requests of command ``cmd`` received so far."""
        return [f for f in self.requests if f.type == cmd]

    def _reply(self, type_: int, seq: int, payload: bytes):
        if type_ == P.ERROR_TYPE:
            self.frames_err += 1
        else:
            self.frames_ok += 1
        if self.silent_after is not None and self.replies >= self.silent_after:
            return
        frame = bytearray(P.encode_frame(type_, seq, payload))
        if self.replies in self.flip_reply:
            frame[len(frame) // 2] ^= 0x10
        self.replies += 1
        self._out += frame

    # ------------------------------------------------------------------ commands
    def _handle(self, f: P.Frame) -> tuple[int, bytes]:
        def err(code):
            return P.ERROR_TYPE, bytes([code, f.type])

        ok = f.type | P.REPLY_FLAG
        n = len(f.payload)
        if f.type not in C._value2member_map_:
            return err(E.UNKNOWN_COMMAND)
        cmd = C(f.type)
        if cmd in (C.HELLO, C.STATUS, C.RESET) and n != 0:
            return err(E.BAD_LENGTH)
        if cmd == C.HELLO:
            return ok, self.manifest.pack()
        if cmd == C.STATUS:
            busy = int(self.status.state != P.RunState.IDLE)
            return ok, P.Status(self.cycles, self.frames_ok, self.frames_err, 0, busy, self.status.run_cycles).pack()
        if cmd == C.RESET:
            self._reset()
            return ok, b""
        if cmd in (C.LOAD, C.RUN):
            if n != 4:
                return err(E.BAD_LENGTH)
            (arg,) = struct.unpack("<I", f.payload)
            code = self._load(arg) if cmd == C.LOAD else self._start(arg)
            return (ok, b"") if code is None else err(code)
        # memory commands
        want = {C.WRITE: None, C.READ: 7, C.CRC: 9}[cmd]
        if n < P.ARG_BYTES or (want is not None and n != want) or n > P.max_payload(self.max_data):
            return err(E.BAD_LENGTH)
        mem, addr = struct.unpack_from("<BI", f.payload)
        if cmd == C.WRITE:
            data = f.payload[P.ARG_BYTES:]
            count = len(data)
        elif cmd == C.READ:
            (count,) = struct.unpack_from("<H", f.payload, P.ARG_BYTES)
            if count > self.max_data:
                return err(E.BAD_LENGTH)
        else:
            (count,) = struct.unpack_from("<I", f.payload, P.ARG_BYTES)
        if mem >= len(self.manifest.mem_sizes):
            return err(E.BAD_MEMORY)
        if addr + count > self.manifest.mem_sizes[mem]:
            return err(E.BAD_ADDRESS)
        if self._run is not None and mem not in (M.INFO, M.CTRL, M.TOKMEM):
            self._advance(None)   # the access waits for the run to end
        if cmd == C.WRITE:
            self._write(mem, addr, data)
            return ok, b""
        got = self._read(mem, addr, count)
        return (ok, got) if cmd == C.READ else (ok, struct.pack("<I", P.crc32(got)))

    # ------------------------------------------------------------------ memories
    def _width(self, mem: int) -> int:
        return self.info.word_bits if mem == M.WMEM else _WIDTH[M(mem)]

    def _write(self, mem: int, addr: int, data: bytes):
        if mem in (M.INFO, M.CTRL):
            return  # read-only: ignored
        stride, width = self.info.stride(mem), self._width(mem)
        top = (width - 1) // 8
        st, img = self.staging[mem], self.image[mem]
        st[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)
        first = -(-(addr - top) // stride)              # words whose top byte lies in the range
        last = (addr + len(data) - 1 - top) // stride
        if last < first:
            return
        words = st[first * stride:(last + 1) * stride].reshape(-1, stride).copy()
        words[:, top] &= (1 << (width - 8 * top)) - 1
        words[:, top + 1:] = 0
        img[first * stride:(last + 1) * stride] = words.reshape(-1)
        self.top_word[mem] = max(self.top_word.get(mem, 0), last + 1)
        if self.corrupt_byte is not None and self.corrupt_byte[0] == mem:
            off = self.corrupt_byte[1]
            if first * stride <= off < (last + 1) * stride:
                img[off] ^= 0x01
        if mem == M.PMEM:
            self._programs.clear()
        if mem in (M.PMEM, M.WMEM, M.CMEM, M.TMEM, M.SIGMEM):
            self._core = None

    def _read(self, mem: int, addr: int, count: int) -> bytes:
        if mem == M.INFO:
            return self.info.pack()[addr:addr + count]
        if mem == M.CTRL:
            return self.status.pack()[addr:addr + count]
        return self.image[mem][addr:addr + count].tobytes()

    def words(self, mem: int, signed: bool = False) -> list[int]:
        """The committed words of ``mem`` as Python integers (decoded from the link bytes)."""
        stride, width = self.info.stride(mem), self._width(mem)
        raw = self.image[mem].tobytes()
        out = []
        for i in range(0, len(raw), stride):
            v = int.from_bytes(raw[i:i + stride], "little") & ((1 << width) - 1)
            if signed and v >> (width - 1):
                v -= 1 << width
            out.append(v)
        return out

    def _array(self, mem: int, signed: bool) -> np.ndarray:
        stride, width = self.info.stride(mem), self._width(mem)
        b = self.image[mem].reshape(-1, stride)
        v = np.zeros(b.shape[0], dtype=np.int64)
        for i in range(stride):
            v |= b[:, i].astype(np.int64) << (8 * i)
        v &= (1 << width) - 1
        if signed:
            v = np.where(v >> (width - 1) != 0, v - (1 << width), v)
        return v

    def _store_vmem(self, values: np.ndarray):
        u = np.asarray(values, dtype=np.int64) & ((1 << 36) - 1)
        b = np.zeros((u.size, 8), dtype=np.uint8)
        for i in range(5):
            b[:, i] = (u >> (8 * i)) & 0xFF
        self.image[M.VMEM][:] = b.reshape(-1)

    def _token(self, index: int) -> int:
        t = self.image[M.TOKMEM]
        return int(t[2 * index]) | int(t[2 * index + 1]) << 8

    def _set_token(self, index: int, value: int):
        self.image[M.TOKMEM][2 * index:2 * index + 2] = (value & 0xFF, value >> 8 & 0xFF)
        self.staging[M.TOKMEM][2 * index:2 * index + 2] = (value & 0xFF, value >> 8 & 0xFF)

    # ------------------------------------------------------------------ the core
    def _program(self, addr: int):
        """The instructions from ``addr`` up to and including the first HALT (None: no HALT)."""
        if addr not in self._programs:
            words = self.words(M.PMEM)
            prog = None
            for pc in range(addr, len(words)):
                ins = decode(words[pc])
                if ins.op == Op.HALT:
                    prog = [decode(w) for w in words[addr:pc + 1]]
                    break
            self._programs[addr] = prog
        return self._programs[addr]

    def _get_core(self) -> Core:
        if self._core is None:
            info = self.info
            nb = -(-info.word_bits // 8)
            s = info.wmem_stride
            # only the words written so far are weights (the rest never reach the engine)
            raw = self.image[M.WMEM][:self.top_word.get(M.WMEM, 0) * s].tobytes()
            wwords = [int.from_bytes(raw[i:i + nb], "little") for i in range(0, len(raw), s)]
            weights = WeightImage(info.lanes, info.rows, _FORMAT[P.WeightFormat(info.weight_format)], wwords, {})
            shim = types.SimpleNamespace(
                weights=weights, vmem_words=info.vmem_words, cmem=self._array(M.CMEM, True),
                tmem=self._array(M.TMEM, False), sigmem=self._array(M.SIGMEM, False), d_model=info.k_max,
                d_ff=0, vocab_size=1 << 16, gemv_macs=0, vmem_map={"logits": (0, 0)},
                program=[], reset_program=[])
            self._core = Core(shim, width=info.vector_width)
        return self._core

    def _set_status(self, **kw):
        self.status = P.RunStatus(**{**self.status.__dict__, **kw})

    def _load(self, arg: int):
        if self._run is not None:
            return E.BUSY
        prog, reset = arg & 0xFFFF, arg >> 16
        if prog >= self.info.pmem_words or reset >= self.info.pmem_words:
            return E.BAD_ARGUMENT
        self.prog_addr, self.reset_addr, self.loaded = prog, reset, True
        self._set_status(loaded=1)
        return None

    def _start(self, arg: int):
        if self._run is not None:
            return E.BUSY
        if not self.loaded:
            return E.NOT_LOADED
        steps, fill = arg & 0xFFFF, arg >> 16
        if steps == 0 or fill == 0 or steps + 1 > self.info.tokmem_words:
            return E.BAD_ARGUMENT
        self._run = {"steps": steps, "fill": fill, "t": 0}
        self._set_status(state=P.RunState.RUNNING, error=P.RunError.NONE, steps_done=0, steps=steps,
                         run_cycles=0)
        return None

    def _advance(self, k: int | None):
        """Let the running core finish ``k`` more steps (None: all)."""
        r = self._run
        if r is None or (self.stall and k is not None):
            return
        prog = self._program(self.prog_addr)
        core = self._get_core() if prog is not None else None
        if core is not None:
            core.vmem = self._array(M.VMEM, True)
            core.c.program = prog
        done = 0
        while r["t"] < r["steps"] and (k is None or done < k):
            if prog is None:
                self._run = None
                self._set_status(state=P.RunState.IDLE, error=P.RunError.NO_HALT)
                return
            t = r["t"]
            _, nxt = core.step(self._token(t))
            if t + 1 >= r["fill"]:
                self._set_token(t + 1, nxt)
            r["t"] = t + 1
            done += 1
            cyc = core.cycles
            self.cycles += cyc.total
            self._set_status(steps_done=t + 1, step_cycles=cyc.total, step_engine_cycles=cyc.engine_busy,
                             run_cycles=self.status.run_cycles + cyc.total, tokens=self.status.tokens + 1,
                             last_token=nxt)
        if core is not None:
            self._store_vmem(core.vmem)
        if r["t"] >= r["steps"]:
            self._run = None
            self._set_status(state=P.RunState.IDLE)

    def _reset(self):
        if self._run is not None:
            self._run = None
            self._set_status(state=P.RunState.IDLE, error=P.RunError.ABORTED)
        if self.loaded:
            prog = self._program(self.reset_addr)
            if prog is None:
                self._set_status(error=P.RunError.NO_HALT)
            else:
                core = self._get_core()
                core.vmem = self._array(M.VMEM, True)
                core.c.reset_program = prog
                core.reset()
                self._store_vmem(core.vmem)
                self.cycles += core.cycles.total
        self._set_status(tokens=0)
        self.frames_ok = self.frames_err = 0
        self.cycles = 0
