"""The whole model on the accelerator gateware, through the link, against the integer reference.

The board model (``sim/board.py``: the accelerator SoC of the ULX3S under Verilator, its UART
pins bridged to a socket) receives a compiled model over the link exactly as a board does, and
runs it token after token with the recurrent state carried. For every token the residual stream
after the embedding and after every layer, every layer's state, the logits and the output token
are read back from the core's memories and compared bit for bit with ``models.intref``.

The residual after layer ``l`` exists only in the middle of a token; it is read by patching a
``HALT`` into PMEM right after the instruction that completes it (``CompiledModel.probes``),
running that prefix of the token on the saved state, and restoring state and program before the
full token runs.
"""

import numpy as np
import pytest

from models.intref import IntRefModel, argmax_first
from sim.board import accel_board_model
from sw import protocol as P
from sw.client import Client
from sw.device import Device, decode_words, encode_words
from sw.isa import Instr, Op, encode
from sw.program import MemorySizes, compile_model

from tiny_models import HUGE_TOK, NEG_TOK, ZERO_TOK, SHIPPED, tiny_checkpoint

M = P.CoreMemory


@pytest.fixture(scope="module")
def board():
    with accel_board_model() as url:
        with Client.open(url, timeout=5.0) as client:
            dev = Device(client, run_timeout=120.0)
            yield dev


def sizes_of(info: P.CoreInfo) -> MemorySizes:
    return MemorySizes(weight_words=info.wmem_words, k_max=info.k_max, vmem_words=info.vmem_words,
                       cmem_words=info.cmem_words, tmem_words=info.tmem_words, prog_words=info.pmem_words)


def compile_for(dev: Device, ref: IntRefModel):
    info = dev.info()
    return compile_model(ref, info.lanes, info.rows, dev.format_name(info), sizes=sizes_of(info))


def vread(dev: Device, cm, name: str) -> np.ndarray:
    a, n = cm.vmem_map[name]
    return decode_words(dev.client.read(M.VMEM, 8 * a, 8 * n), 36, 8, signed=True)


def step(dev: Device, token: int) -> P.RunStatus:
    """One token on the board (TOKMEM[0] = token, RUN steps=1 fill=1); returns CTRL after it."""
    dev.client.write(M.TOKMEM, 0, encode_words([token], 16, 2))
    dev.client.run(P.run_arg(1, 1))
    for _ in range(100000):
        st = dev.status()
        if st.state == P.RunState.IDLE:
            break
    assert st.state == P.RunState.IDLE and st.error == P.RunError.NONE, st
    return st


def run_and_compare(dev: Device, ref: IntRefModel, cm, tokens, probe_tokens=2):
    """Step the board and the reference over ``tokens``; compare everything (see module doc)."""
    n_layers = ref.config.n_layers
    states = [f"state{n}" for n in range(n_layers)]
    prog = cm.program_image()
    dev.reset()
    ref.reset(1)
    cycles = []
    for k, tok in enumerate(tokens):
        logits, tr = ref.step(int(tok), trace=True)
        if k < probe_tokens:  # the residual after the embedding and after every layer
            saved = {s: vread(dev, cm, s) for s in states}
            for pc, name in cm.probes:
                halt = encode(Instr(Op.HALT)).to_bytes(16, "little")
                dev.client.write(M.PMEM, 16 * (pc + 1), halt)
                step(dev, int(tok))
                dev.client.write(M.PMEM, 16 * (pc + 1), prog[16 * (pc + 1):16 * (pc + 2)])
                got = vread(dev, cm, "h")
                want = tr["h"][int(name[1:])][0]
                assert np.array_equal(got, want), f"{name} differs at token {k} ({tok}): " \
                    f"{np.flatnonzero(got != want)[:8]}"
                for s in states:
                    a, _ = cm.vmem_map[s]
                    dev.client.write(M.VMEM, 8 * a, encode_words(saved[s], 36, 8, signed=True))
        st = step(dev, int(tok))
        cycles.append((st.step_cycles, st.step_engine_cycles))
        got = vread(dev, cm, "logits")
        want = logits.reshape(-1)
        assert np.array_equal(got, want), f"logits differ at token {k} ({tok})"
        assert np.array_equal(vread(dev, cm, "h"), tr["h"][-1][0]), f"final residual differs at token {k}"
        for n in range(n_layers):
            assert np.array_equal(vread(dev, cm, f"state{n}"), ref.state[n][0]), f"state {n} differs at token {k}"
        nxt = decode_words(dev.client.read(M.TOKMEM, 2, 2), 16, 2)[0]
        assert nxt == int(argmax_first(want)) == st.last_token, f"next token differs at token {k}"
    return cycles


def test_manifest_and_info(board):
    info = board.info()
    m = board.manifest
    assert m.pe_kind == P.PEKind.ADDER_TREE and m.lanes == info.lanes == 32 and info.rows == 8
    assert board.format_name(info) == "trits5" and info.vector_width == 1
    assert tuple(m.mem_sizes) == info.mem_bytes()
    # INFO and CTRL are read-only
    board.client.write(M.INFO, 0, b"\x00\x00\x00\x00")
    assert P.CoreInfo.unpack(board.client.read(M.INFO, 0, P.CoreInfo.SIZE)) == info


def test_run_errors(board):
    c = board.client
    from sw.client import RemoteError
    with pytest.raises(RemoteError) as e:
        c.run(P.run_arg(1, 1))       # nothing loaded since the model started
    assert e.value.code in (P.ErrorCode.NOT_LOADED,)
    with pytest.raises(RemoteError) as e:
        c.load(P.load_arg(0, 600))   # beyond PMEM (512 words)
    assert e.value.code == P.ErrorCode.BAD_ARGUMENT


def test_tiny_model_equals_intref(board, tmp_path):
    ref = IntRefModel(tiny_checkpoint(tmp_path / "tiny.safetensors"))
    cm = compile_for(board, ref)
    board.load(cm)
    rng = np.random.default_rng(1)
    toks = [ZERO_TOK, HUGE_TOK, 3, NEG_TOK, 0, 255, *rng.integers(0, 256, 4), ZERO_TOK, HUGE_TOK]
    run_and_compare(board, ref, cm, toks, probe_tokens=3)
    # zero steps, zero fill or more steps than TOKMEM holds are refused; the board keeps serving
    from sw.client import RemoteError
    for arg in (0, P.run_arg(1, 1) & 0xFFFF, 1024 | 1 << 16):
        with pytest.raises(RemoteError) as e:
            board.client.run(arg)
        assert e.value.code == P.ErrorCode.BAD_ARGUMENT
    # greedy generation in one RUN: prompt of 3, 6 generated tokens
    prompt = [72, 105, 33]
    got = board.generate(prompt, 6)
    ref.reset(1)
    for t in prompt[:-1]:
        ref.step(t)
    want, t = [], prompt[-1]
    for _ in range(6):
        t = int(argmax_first(ref.step(t).reshape(-1)))
        want.append(t)
    assert list(got) == want


def test_shipped_model_equals_intref(board):
    assert SHIPPED.exists(), "the shipped checkpoint is missing"
    ref = IntRefModel(SHIPPED)
    cm = compile_for(board, ref)
    board.load(cm)
    cycles = run_and_compare(board, ref, cm, list(b"ROMEO:\n\x00"), probe_tokens=1)
    # the engine issues every weight word of the token once: at least the image's words per step
    for total, engine in cycles:
        assert engine >= len(cm.weights.words) and total > engine


def test_run_cli_on_board_model(tmp_path):
    """``python -m sw.run --device sim`` (what ``make demo`` runs, here on the tiny model to keep
    the upload short): upload with progress, sampled text streamed, statistics, and the tokens
    identical to the integer reference (--verify)."""
    import io

    from sw.run import main
    ckpt = tmp_path / "tiny.safetensors"
    tiny_checkpoint(ckpt, seed=3)
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--device", "sim", "--checkpoint", str(ckpt), "--prompt", "ROMEO:", "-n", "12",
               "--temperature", "0.8", "--top-k", "40", "--seed", "1", "--verify"], out=out, err=err)
    text = out.getvalue()
    assert rc == 0, err.getvalue()
    assert text.startswith("ROMEO:")
    assert "identical to the integer reference (models.intref): yes" in text
    assert "cycles/token:" in text and "projected on the ulx3s" in text.lower()
    assert "upload WMEM" in err.getvalue() and "100.0%" in err.getvalue()


def _reference_generation(ref: IntRefModel, prompt, n: int, sampler) -> list:
    """What ``Device.generate`` must return: intref's tokens with the same sampler (or argmax)."""
    ref.reset(1)
    for t in prompt:
        logits = ref.step(int(t)).reshape(-1)
    out = []
    while len(out) < n:
        out.append(int(sampler(logits)) if sampler is not None else int(argmax_first(logits)))
        if len(out) < n:
            logits = ref.step(out[-1]).reshape(-1)
    return out


def test_runtime_equals_intref_through_a_flaky_link(tmp_path):
    """The runtime on the gateware, with bits flipped on the link both ways during the upload and
    the generation: the frames are retried, the upload verifies, and greedy and sampled tokens
    for several prompts equal the integer reference's."""
    from test_client_sim import FlakyTransport

    from sw.sampling import Sampler
    from sw.transport import open_transport

    ref = IntRefModel(tiny_checkpoint(tmp_path / "tiny.safetensors", seed=5))
    with accel_board_model() as url:
        # a lost frame costs a whole timeout, and the model needs ~1 s for a 4 KB frame on a busy
        # machine: a long timeout, and flips rare enough that the test stays around a minute
        flaky = FlakyTransport(open_transport(url), p_tx=0.03, p_rx=0.01, seed=11)
        with Client(flaky, timeout=8.0, retries=12) as client:
            dev = Device(client, run_timeout=120.0)
            cm = compile_for(dev, ref)
            dev.load(cm)
            cases = [([72, 101, 108, 108, 111], None), ([72, 101, 108, 108, 111], (0.8, 40, 1)),
                     ([ZERO_TOK, HUGE_TOK, NEG_TOK, 0, 255], None), ([ZERO_TOK, HUGE_TOK, NEG_TOK, 0, 255], (1.3, 0, 7))]
            for prompt, s in cases:
                mk = (lambda: Sampler(s[0], s[1], s[2], ref.formats.logit_frac)) if s else (lambda: None)
                got = dev.generate(prompt, 5, sampler=mk())
                assert got == _reference_generation(ref, prompt, 5, mk()), (prompt, s)
            assert flaky.flipped_tx > 0 and flaky.flipped_rx > 0 and client.retransmissions > 0


def test_resent_run_is_not_run_twice(board, tmp_path):
    """A RUN resent with the same SEQ (its reply was lost) is answered OK and not started again;
    the same RUN with a new SEQ runs."""
    ref = IntRefModel(tiny_checkpoint(tmp_path / "tiny.safetensors"))
    board.load(compile_for(board, ref))
    c = board.client

    def wait_idle():
        for _ in range(100000):
            st = board.status()
            if st.state == P.RunState.IDLE:
                return st
        raise AssertionError("the core did not finish")

    c.write(M.TOKMEM, 0, encode_words([1, 2, 3], 16, 2))
    c.run(P.run_arg(3, 3))
    c._seq = (c._seq - 1) & 0xFF        # the very same frame again
    c.run(P.run_arg(3, 3))
    st = wait_idle()
    assert (st.tokens, st.steps_done, st.error) == (3, 3, P.RunError.NONE)
    c.run(P.run_arg(3, 3))              # a new SEQ: a new run
    assert wait_idle().tokens == 6


def test_core_errors_abort_and_recovery(board, tmp_path):
    """LOAD and RUN while running answer BUSY; RESET stops a long run (ABORTED) and zeroes the
    state; a program without HALT ends in NO_HALT; the core serves normally afterwards."""
    from sw.client import RemoteError
    ref = IntRefModel(tiny_checkpoint(tmp_path / "tiny.safetensors"))
    cm = compile_for(board, ref)
    board.load(cm)
    c = board.client
    steps = 1000
    c.write(M.TOKMEM, 0, encode_words([3] * steps, 16, 2))
    c.run(P.run_arg(steps, steps))
    for cmd in (lambda: c.run(P.run_arg(1, 1)), lambda: c.load(P.load_arg(0, len(cm.program)))):
        with pytest.raises(RemoteError) as e:
            cmd()
        assert e.value.code == P.ErrorCode.BUSY
    assert board.status().state == P.RunState.RUNNING
    c.reset()                                   # answered once the reset program has run
    st = board.status()
    assert st.state == P.RunState.IDLE and st.error == P.RunError.ABORTED and st.steps_done < steps
    for n in range(ref.config.n_layers):        # the reset program zeroed every state
        assert not vread(board, cm, f"state{n}").any()
    # the core still computes correctly after the abort
    run_and_compare(board, ref, cm, [ZERO_TOK, 3, 200], probe_tokens=0)

    # a program that never halts runs off the end of PMEM and stops there
    info = board.info()
    nops = encode(Instr(Op.NOP)).to_bytes(16, "little") * info.pmem_words
    c.upload(M.PMEM, 0, nops)
    c.load(P.load_arg(0, 0))
    c.run(P.run_arg(1, 1))
    for _ in range(10000):
        st = board.status()
        if st.state == P.RunState.IDLE:
            break
    assert st.state == P.RunState.IDLE and st.error == P.RunError.NO_HALT and st.steps_done == 0
    c.reset()      # its "reset program" at 0 has no HALT either: RESET still ends
    assert board.status().state == P.RunState.IDLE


def test_background_vector_instruction(board, tmp_path):
    """A vector instruction that writes no register runs in the background: here a VEMB with
    rd = 0 (embedding constants into ``z``) while a scalar chain runs beside it, then eight SLDCs
    of consecutive CMEM words (they wait: their reads would compete with the unit's in some
    bank), a VMAXABS of the VEMB's output (waits), a VSET (background; HALT waits for it) and
    HALT. r2 (the next token: every result summed) and VMEM equal the executor's; the tokens
    move the SLDCs' words through all eight CMEM banks."""
    import dataclasses

    from sw.isa_sim import Core
    ref = IntRefModel(tiny_checkpoint(tmp_path / "tiny.safetensors"))
    cm = compile_for(board, ref)
    d = cm.d_model
    h, _ = cm.vmem_map["h"]
    z, nz = cm.vmem_map["z"]
    emb, _ = cm.cmem_map["emb.mant"]
    prog = [
        Instr(Op.SMULI, rd=21, ra=1, imm=d),
        Instr(Op.SADD, rd=21, ra=21, rb=0, imm=emb),             # the token's embedding row
        Instr(Op.SLI, rd=22, imm=3),                            # shift
        Instr(Op.VEMB, a0=z, n=nz, ra=21, rb=22, sat=12, rd=0),   # background
        Instr(Op.SLI, rd=23, imm=7),                            # scalar chain beside it
        Instr(Op.SADD, rd=24, ra=23, rb=1, imm=5),
        Instr(Op.SMULI, rd=24, ra=24, imm=3),
        Instr(Op.SRSHI, rd=24, ra=24, imm=1),
        Instr(Op.SADD, rd=27, ra=21, rb=1),                     # row + token: moves the banks
        *[Instr(Op.SLDC, rd=10 + k, ra=27, imm=k) for k in range(8)],
        Instr(Op.VMAXABS, rd=26, a1=z, n=nz),                    # reads the VEMB's output
        Instr(Op.VSET, a0=h, n=d, imm=-5),                      # background
        *[Instr(Op.SADD, rd=24, ra=24, rb=10 + k) for k in range(8)],
        Instr(Op.SADD, rd=2, ra=26, rb=24),
        Instr(Op.HALT),
    ]
    cm2 = dataclasses.replace(cm, program=prog, probes=[])
    assert emb + 200 * d + nz + 8 <= len(cm2.cmem)
    board.load(cm2)
    for tok in (*range(8), 200):
        sim = Core(cm2)
        _, want_next = sim.step(tok)
        st = step(board, tok)
        assert st.last_token == want_next & 0xFFFF, (tok, st.last_token, want_next)
        got_z = decode_words(board.client.read(M.VMEM, 8 * z, 8 * nz), 36, 8, signed=True)
        assert np.array_equal(got_z, sim.vmem[z:z + nz]), tok
        assert np.array_equal(vread(board, cm2, "h"), sim.region("h")) and (sim.region("h") == -5).all(), tok
        assert sim.regs[26] > 0 and sim.regs[10 + 7] == int(cm2.cmem[emb + tok * d + tok + 7]), tok
