"""The host runtime (sw.device, sw.sampling, sw.run) against the functional board double.

Every generated token is compared with the integer reference (models.intref) stepped here
directly: greedy with its own first-index argmax, sampled with a fresh sampler of the same seed
fed the reference's logits (and the logits the runtime read from the board are compared with the
reference's bit for bit).
"""

import io
import time

import numpy as np
import pytest

from models.intref import IntRefModel, argmax_first
from sw import protocol as P
from sw.client import Client, LinkTimeout, VerifyError
from sw.compiler import ModelTooLarge
from sw.device import Device, DeviceError, ModelMismatch, RunTimeout, decode_words, encode_words
from sw.isa import encode_program
from sw.isa_sim import Core
from sw.program import compile_model
from sw.run import main
from sw.sampling import Sampler
from tests.fake_board import FakeBoard, info_for
from tests.tiny_models import HUGE_TOK, NEG_TOK, SHIPPED, ZERO_TOK, tiny_checkpoint

M, C = P.CoreMemory, P.Command
TINY_SHAPE = (16, 4, "2bit")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "tiny.safetensors"
    tiny_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return IntRefModel(tiny_path)


@pytest.fixture(scope="module")
def tiny_cm(tiny):
    return compile_model(tiny, *TINY_SHAPE)


@pytest.fixture(scope="module")
def shipped():
    ref = IntRefModel(SHIPPED)
    return ref, compile_model(ref, 32, 8, "trits5")


def board(cm, *, timeout=1.0, retries=2, run_timeout=10.0, steps_per_request=1, **info):
    fake = FakeBoard(info_for(cm, **info), steps_per_request=steps_per_request)
    return fake, Device(Client(fake, timeout=timeout, retries=retries), run_timeout=run_timeout,
                        poll_interval=0.0)


def reference(ref, prompt, n, sampler=None):
    """Tokens (and the logits each was chosen from) of the integer reference."""
    ref.reset(1)
    for t in prompt:
        logits = np.asarray(ref.step(int(t))).reshape(-1)
    out, seen = [], []
    for i in range(n):
        seen.append(logits)
        tok = int(argmax_first(logits)) if sampler is None else sampler(logits)
        out.append(tok)
        if i + 1 < n:
            logits = np.asarray(ref.step(tok)).reshape(-1)
    return out, seen


class Recorder:
    """A sampler that records the logits it is given."""

    def __init__(self, inner):
        self.inner, self.logits = inner, []

    def __call__(self, logits):
        self.logits.append(np.array(logits))
        return self.inner(logits)


# ------------------------------------------------------------------------- generation

def _prompts(vocab, rng):
    return [
        [ZERO_TOK], [HUGE_TOK, NEG_TOK, ZERO_TOK, HUGE_TOK],
        [0, vocab - 1, 0, vocab - 1],
        list(rng.integers(0, vocab, 5)),
        list(rng.integers(0, vocab, 23)),        # longer than TOKMEM (8 words: 7 steps per RUN)
    ]


def test_greedy_equals_intref(tiny, tiny_cm):
    rng = np.random.default_rng(1)
    fake, dev = board(tiny_cm, tokmem_words=8)
    dev.load(tiny_cm)
    for prompt in _prompts(tiny_cm.vocab_size, rng):
        for n in (1, 6, 7, 19):
            streamed = []
            got = dev.generate(prompt, n, on_token=streamed.append)
            want, _ = reference(tiny, prompt, n)
            assert got == want, (prompt, n)
            assert streamed == got
            assert dev.stats().tokens == len(prompt) + n - 1
    # n = 0 feeds the prompt only
    assert dev.generate([1, 2, 3], 0) == []
    assert dev.stats().tokens == 3


def test_state_continues_without_reset(tiny, tiny_cm):
    fake, dev = board(tiny_cm, tokmem_words=8)
    dev.load(tiny_cm)
    first = dev.generate([3, 4, 5], 4)
    more = dev.generate([first[-1]], 5, reset=False)
    want, _ = reference(tiny, [3, 4, 5], 9)
    assert first + more == want


def test_tokens_stream_while_the_core_runs(tiny_cm):
    fake, dev = board(tiny_cm, tokmem_words=64)
    dev.load(tiny_cm)
    progress = []
    dev.generate([1, 2], 40, on_token=lambda t: progress.append(fake.status.steps_done))
    assert len(progress) == 40
    assert progress[0] < 41 and progress == sorted(progress)  # first token read long before the end
    assert sum(1 for f in fake.sent(C.RUN)) == 1                # one RUN for prompt and generation


@pytest.mark.parametrize("temperature,top_k,seed", [(0.8, 0, 1), (1.5, 5, 7)])
def test_sampled_equals_intref(tiny, tiny_cm, temperature, top_k, seed):
    frac = tiny.formats.logit_frac
    fake, dev = board(tiny_cm, tokmem_words=8)
    dev.load(tiny_cm)
    for prompt in ([HUGE_TOK], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]):   # the second one > TOKMEM
        rec = Recorder(Sampler(temperature, top_k, seed, frac))
        got = dev.generate(prompt, 12, sampler=rec)
        want, logits = reference(tiny, prompt, 12, Sampler(temperature, top_k, seed, frac))
        assert got == want
        assert len(rec.logits) == len(logits)
        for a, b in zip(rec.logits, logits):
            assert a.dtype.kind == "i" and np.array_equal(a, b)


def test_shipped_checkpoint(shipped):
    ref, cm = shipped
    fake, dev = board(cm, tokmem_words=16)
    dev.load(cm)
    for text in (b"ROMEO:", b"First Citizen:\nBefore we proceed any further"):   # 2nd > TOKMEM
        got = dev.generate(list(text), 20)
        assert got == reference(ref, list(text), 20)[0]
    rec = Recorder(Sampler(0.9, 20, 3, ref.formats.logit_frac))
    got = dev.generate(list(b"KING:"), 10, sampler=rec)
    want, logits = reference(ref, list(b"KING:"), 10, Sampler(0.9, 20, 3, ref.formats.logit_frac))
    assert got == want and all(np.array_equal(a, b) for a, b in zip(rec.logits, logits))
    # cycles per token: those of the cycle model of the same program, computed here directly
    core = Core(cm, width=16)
    core.reset()
    core.step(65)
    s = dev.stats()
    assert (s.step_cycles, s.step_engine_cycles) == (core.cycles.total, core.cycles.engine_busy)
    assert s.projected_tokens_per_s == pytest.approx(75e6 / core.cycles.total)
    assert s.other_cycles == s.step_cycles - s.step_engine_cycles
    assert 0 < s.engine_utilisation < 1 and s.link_bytes > 0 and s.upload_bytes > 450_000


# ------------------------------------------------------------------------- upload and encoding

def test_uploaded_images_decode_to_the_model(tiny_cm):
    fake, dev = board(tiny_cm)
    dev.load(tiny_cm)
    n = len(tiny_cm.program) + len(tiny_cm.reset_program)
    assert fake.words(M.PMEM)[:n] == encode_program(tiny_cm.program) + encode_program(tiny_cm.reset_program)
    assert fake.words(M.WMEM)[:len(tiny_cm.weights.words)] == tiny_cm.weights.words
    assert fake.words(M.CMEM, signed=True)[:tiny_cm.cmem.size] == [int(v) for v in tiny_cm.cmem]
    assert fake.words(M.TMEM)[:tiny_cm.tmem.size] == [int(v) for v in tiny_cm.tmem]
    assert fake.words(M.SIGMEM)[:tiny_cm.sigmem.size] == [int(v) for v in tiny_cm.sigmem]
    assert min(tiny_cm.cmem) < 0  # the signed path is exercised
    (load,) = fake.sent(C.LOAD)
    assert int.from_bytes(load.payload, "little") == P.load_arg(0, len(tiny_cm.program))


def test_word_encoding_edges():
    vals = [-(1 << 17), (1 << 17) - 1, 0, -1, 1]
    b = encode_words(vals, 18, 4, signed=True)
    assert b[:4] == bytes([0, 0, 2, 0]) and b[4:8] == bytes([0xFF, 0xFF, 1, 0])
    assert b[12:16] == bytes([0xFF, 0xFF, 3, 0])
    assert list(decode_words(b, 18, 4, signed=True)) == vals
    v36 = [-(1 << 35), (1 << 35) - 1, -1]
    b = encode_words(v36, 36, 8, signed=True)
    assert b[8 * 2:8 * 3] == bytes([0xFF] * 4 + [0x0F, 0, 0, 0])
    assert list(decode_words(b, 36, 8, signed=True)) == v36
    assert list(decode_words(bytes([0xFF] * 8), 36, 8, signed=True)) == [-1]   # bits above the width ignored
    for bad in ([1 << 17], [-(1 << 17) - 1]):
        with pytest.raises(ValueError):
            encode_words(bad, 18, 4, signed=True)
    with pytest.raises(ValueError):
        encode_words([-1], 16, 2)


def test_corrupted_upload_is_detected(tiny_cm):
    for mem, off in ((M.WMEM, 77), (M.CMEM, 4 * 3 + 2), (M.PMEM, 15)):
        fake, dev = board(tiny_cm)
        fake.corrupt_byte = (mem, off)
        with pytest.raises(VerifyError):
            dev.load(tiny_cm)
        assert fake.sent(C.LOAD) == [] and fake.sent(C.RUN) == []


def test_reply_bit_flips_are_retransmitted(tiny, tiny_cm):
    fake, dev = board(tiny_cm, timeout=0.05, retries=3)
    fake.flip_reply = {1, 5}
    dev.load(tiny_cm)
    assert dev.client.retransmissions >= 2
    fake.flip_reply = {fake.replies + 2, fake.replies + 6}     # during the generation
    assert dev.generate([2, 3], 9) == reference(tiny, [2, 3], 9)[0]
    assert dev.client.retransmissions >= 4


# ------------------------------------------------------------------------- refusals before upload

@pytest.mark.parametrize("field,word", [("pmem_words", "PMEM"), ("wmem_words", "WMEM"), ("cmem_words", "CMEM"),
                                        ("tmem_words", "TMEM"), ("sigmem_words", "SIGMEM"),
                                        ("vmem_words", "VMEM"), ("k_max", "k_max")])
def test_too_large_model_refused_before_any_write(tiny_cm, field, word):
    s = tiny_cm.summary()
    need = s[field]
    fake, dev = board(tiny_cm, **{field: need - 1})
    with pytest.raises(ModelTooLarge, match=word) as exc:
        dev.load(tiny_cm)
    assert str(need) in str(exc.value)
    assert fake.sent(C.WRITE) == [] and fake.sent(C.LOAD) == []
    fake2, dev2 = board(tiny_cm, **{field: need})   # exactly fits
    dev2.check(tiny_cm)


@pytest.mark.parametrize("override", [dict(pe_kind=P.PEKind.BIT_SERIAL), dict(pe_kind=P.PEKind.LUT),
                                      dict(lanes=32), dict(rows=8),
                                      dict(weight_format=P.WeightFormat.TRITS5)])
def test_wrong_engine_refused_before_any_write(tiny_cm, override):
    fake, dev = board(tiny_cm, **override)
    with pytest.raises(ModelMismatch):
        dev.load(tiny_cm)
    assert fake.sent(C.WRITE) == []


def test_info_is_checked(tiny_cm):
    for override, what in ((dict(magic=0x12345678), "magic"), (dict(isa_version=P.ISA_VERSION + 1), "ISA")):
        fake, dev = board(tiny_cm, **override)
        with pytest.raises(DeviceError, match=what):
            dev.info()


# ------------------------------------------------------------------------- link and core failures

def test_silent_board_ends_in_link_timeout(tiny_cm):
    for after in (0, 2, 30):
        fake, dev = board(tiny_cm, timeout=0.05, retries=1)
        fake.silent_after = after
        t = time.monotonic()
        with pytest.raises(LinkTimeout):
            dev.load(tiny_cm)
            dev.generate([1, 2], 5)
        assert time.monotonic() - t < 5


def test_silent_during_generation(tiny_cm):
    fake, dev = board(tiny_cm, timeout=0.05, retries=1)
    dev.load(tiny_cm)
    fake.silent_after = fake.replies + 4
    with pytest.raises(LinkTimeout):
        dev.generate([1, 2], 30)


def test_stalled_core_ends_in_run_timeout(tiny_cm):
    fake, dev = board(tiny_cm, run_timeout=0.2)
    dev.load(tiny_cm)
    fake.stall = True
    t = time.monotonic()
    with pytest.raises(RunTimeout):
        dev.generate([1, 2], 5)
    assert time.monotonic() - t < 5


# ------------------------------------------------------------------------- the double itself

def test_fake_board_answers_as_specified(tiny_cm):
    fake, dev = board(tiny_cm, tokmem_words=8)
    c = dev.client
    c.hello()
    E = P.ErrorCode

    def code_of(cmd, payload):
        try:
            c.request(cmd, payload)
        except Exception as exc:  # noqa: BLE001
            return getattr(exc, "code", None)
        return 0

    size = fake.manifest.mem_sizes
    assert code_of(C.READ, P.read_request(9, 0, 1)) == E.BAD_MEMORY
    assert code_of(C.READ, P.read_request(M.TOKMEM, size[M.TOKMEM] - 1, 2)) == E.BAD_ADDRESS
    assert code_of(C.READ, P.read_request(M.TOKMEM, size[M.TOKMEM] - 2, 2)) == 0
    assert code_of(C.READ, P.read_request(M.VMEM, 0, 4097)) == E.BAD_LENGTH
    assert code_of(C.RUN, P.run_arg(1, 1).to_bytes(4, "little")) == E.NOT_LOADED
    assert code_of(C.LOAD, P.load_arg(fake.info.pmem_words, 0).to_bytes(4, "little")) == E.BAD_ARGUMENT
    assert code_of(0x33, b"") == E.UNKNOWN_COMMAND
    c.write(M.INFO, 0, bytes(8))                         # read-only: ignored
    assert c.read(M.INFO, 0, P.CoreInfo.SIZE) == fake.info.pack()
    dev.load(tiny_cm)
    assert code_of(C.RUN, P.run_arg(7, 1).to_bytes(4, "little")) == 0
    assert code_of(C.RUN, P.run_arg(1, 1).to_bytes(4, "little")) == E.BUSY
    assert code_of(C.LOAD, P.load_arg(0, 1).to_bytes(4, "little")) == E.BUSY
    c.reset()
    st = dev.status()
    assert st.state == P.RunState.IDLE and st.error == P.RunError.ABORTED and st.tokens == 0
    assert code_of(C.RUN, P.run_arg(8, 1).to_bytes(4, "little")) == E.BAD_ARGUMENT   # steps + 1 > TOKMEM
    # a word is committed when its top byte arrives; bits above the width read as 0
    top = size[M.CMEM] - 4                               # a word the model does not use: 0
    c.write(M.CMEM, top, bytes([0x11, 0x22]))
    assert c.read(M.CMEM, top, 4) == bytes(4)
    c.write(M.CMEM, top + 2, bytes([0xFF, 0xFF]))
    assert c.read(M.CMEM, top, 4) == bytes([0x11, 0x22, 0x03, 0])


# ------------------------------------------------------------------------- sampler

def test_sampler():
    logits = np.array([3, 9, 9, -4, 0], dtype=np.int64)
    assert Sampler()(logits) == 1                                     # greedy: lowest index on ties
    assert Sampler(0.5, top_k=1, seed=3)(np.array([1, 2, 5, 5])) == 2
    s1, s2, s3 = Sampler(1.0, 0, 5, 2), Sampler(1.0, 0, 5, 2), Sampler(1.0, 0, 6, 2)
    draws = [s1(logits) for _ in range(50)]
    assert draws == [s2(logits) for _ in range(50)]            # same seed, same tokens
    assert draws != [s3(logits) for _ in range(50)] and len(set(draws)) > 1
    p = Sampler(1.0, top_k=2, logit_frac=0).probabilities(logits)
    assert p[1] == pytest.approx(0.5) and p[2] == pytest.approx(0.5) and p[[0, 3, 4]].sum() == 0
    p = Sampler(2.0, logit_frac=1).probabilities(np.array([0, 4]))     # (0, 2.0) / 2 -> softmax(0, 1)
    assert p[1] == pytest.approx(np.e / (1 + np.e))
    counts = np.bincount([Sampler(1.0, 0, s, 0)(np.array([0, 0, 0, 0])) for s in range(400)], minlength=4)
    assert counts.min() > 60


# ------------------------------------------------------------------------- command line

def _cli(argv, fake=None):
    out, err = io.StringIO(), io.StringIO()
    opener = None if fake is None else (lambda url, args: Client(fake, timeout=args.timeout, retries=args.retries))
    kw = {} if opener is None else {"open_client": opener}
    rc = main(argv, out=out, err=err, **kw)
    return rc, out.getvalue(), err.getvalue()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("--device", "sim", "socket://", "--temperature", "--top-k", "--seed", "--checkpoint",
                 "--baud", "--timeout", "Exit status"):
        assert word in text


def test_cli_bad_input(tmp_path):
    rc, out, err = _cli(["--checkpoint", str(tmp_path / "missing.safetensors"), "--device", "socket://x"])
    assert rc == 2 and "missing.safetensors" in err and err.count("\n") == 1
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x07not a checkpoint at all")
    rc, out, err = _cli(["--checkpoint", str(junk), "--device", "socket://x"])
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
    rc, out, err = _cli(["-n", "-1"])
    assert rc == 2 and err.count("\n") == 1


def test_cli_unreachable_device(tiny_path):
    rc, out, err = _cli(["--checkpoint", str(tiny_path), "--device", "socket://127.0.0.1:1", "--timeout", "0.1"])
    assert rc == 1 and err.startswith("error:") and err.count("\n") == 1


def test_cli_generates_the_reference_text(tiny, tiny_path, tiny_cm):
    fake = FakeBoard(info_for(tiny_cm, tokmem_words=16))
    rc, out, err = _cli(["--checkpoint", str(tiny_path), "--device", "fake", "--prompt", "Hi", "-n", "12"], fake)
    assert rc == 0, err
    want, _ = reference(tiny, list(b"Hi"), 12)
    text = out.split("\n\n")[0]
    assert text == "Hi" + bytes(want).decode("utf-8", errors="replace")
    assert "upload WMEM" in err and "100.0%" in err
    for word in ("cycles/token", "engine utilisation", "projected", "measured", "link:"):
        assert word in out
    # sampled from the command line
    fake = FakeBoard(info_for(tiny_cm, tokmem_words=16))
    rc, out, err = _cli(["--checkpoint", str(tiny_path), "--device", "fake", "--prompt", "Hi", "-n", "12",
                         "--temperature", "0.7", "--top-k", "4", "--seed", "11", "--quiet"], fake)
    assert rc == 0 and err.count("upload") == 0
    want, _ = reference(tiny, list(b"Hi"), 12, Sampler(0.7, 4, 11, tiny.formats.logit_frac))
    assert out.split("\n\n")[0] == "Hi" + bytes(want).decode("utf-8", errors="replace")


def test_cli_refuses_before_upload(tiny_path, tiny_cm):
    for override in (dict(wmem_words=8), dict(pe_kind=P.PEKind.BIT_SERIAL)):
        fake = FakeBoard(info_for(tiny_cm, **override))
        rc, out, err = _cli(["--checkpoint", str(tiny_path), "--device", "fake", "-n", "3"], fake)
        assert rc == 2 and "does not fit" in err and err.count("\n") == 1
        assert fake.sent(C.WRITE) == []


def test_cli_link_failure_exit_1(tiny_path, tiny_cm):
    fake = FakeBoard(info_for(tiny_cm))
    fake.corrupt_byte = (M.CMEM, 1)
    rc, out, err = _cli(["--checkpoint", str(tiny_path), "--device", "fake", "-n", "3", "--quiet"], fake)
    assert rc == 1 and "VerifyError" in err
    fake = FakeBoard(info_for(tiny_cm))
    fake.silent_after = 5
    rc, out, err = _cli(["--checkpoint", str(tiny_path), "--device", "fake", "-n", "3", "--quiet",
                         "--timeout", "0.05", "--retries", "1"], fake)
    assert rc == 1 and "LinkTimeout" in err
