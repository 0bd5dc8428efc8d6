"""``python -m sw.run``: run the ternary LM on the accelerator board and stream its text.

Loads a checkpoint, asks the board what its core is (HELLO and the INFO record), compiles the
model for that core (engine lanes, rows, weight format), refuses a model that does not fit or
was built for another engine before anything is uploaded, uploads the program, weights and
tables (each memory verified by CRC, progress on stderr), then feeds the prompt and streams the
generated text to stdout as the tokens arrive. Greedy decoding is the core's own argmax; with
``--temperature`` the host reads the logits after every token and samples (``--top-k``,
``--seed``). It ends with the core's cycles per token, the tokens/s they project at the
board's SoC clock (the board model: the ULX3S-85F's ``soc_clk_hz``), the tokens/s measured on this device (link included) and the link traffic.

``--device sim`` starts the cycle-accurate board model of the accelerator SoC
(``sim.board.accel_board_model``) and talks to it over its socket.

Exit status: 0 ok, 2 bad input (arguments, checkpoint, a model that does not fit the board),
1 device or link error.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CKPT = ROOT / "models" / "checkpoints" / "mmfree-tiny.safetensors"

__all__ = ["main", "build_parser"]


class _BadInput(Exception):
    """Exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m sw.run", description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m sw.run --device /dev/ttyUSB0 --prompt 'ROMEO:' -n 200 "
               "--temperature 0.8 --top-k 20 --seed 1")
    ap.add_argument("--device", default="/dev/ttyUSB0",
                    help="the board: 'sim' (the cycle-accurate board model, started here), a serial port "
                         "(/dev/ttyUSB0, COM3) or a pyserial URL such as socket://127.0.0.1:PORT "
                         "(default: %(default)s)")
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT,
                    help="ternary checkpoint (.safetensors, models/checkpoint.py format; default: the shipped "
                         "byte-level model)")
    ap.add_argument("--prompt", default="ROMEO:",
                    help="prompt text, fed as UTF-8 bytes (an empty prompt starts from a newline)")
    ap.add_argument("-n", type=int, default=200, help="tokens (bytes) to generate (default: %(default)s)")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="0: greedy, the core's own argmax (default); > 0: the host samples from "
                         "softmax(logits / T) of the logits the core leaves in VMEM")
    ap.add_argument("--top-k", type=int, default=0,
                    help="with --temperature: sample among the k largest logits only (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same text)")
    ap.add_argument("--baud", type=int, default=3_000_000, help="serial line rate (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds to wait for a link reply before retransmitting (default: 1 on a board, "
                         "10 on the board model, whose clock runs slower than real time)")
    ap.add_argument("--retries", type=int, default=4, help="retransmissions per frame (default: %(default)s)")
    ap.add_argument("--run-timeout", type=float, default=30.0,
                    help="seconds the core may go without finishing a token (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true", help="no upload progress on stderr")
    ap.add_argument("--verify", action="store_true",
                    help="also run the integer reference (models.intref) on the same prompt and sampler and "
                         "check that the board's tokens are identical (exit status 1 if not)")
    return ap


def _load_model(path: Path):
    """Checkpoint -> integer reference model; _BadInput with a one-line reason."""
    from models.checkpoint import CheckpointError, load_checkpoint
    if not path.is_file():
        raise _BadInput(f"checkpoint {path} does not exist")
    try:
        ckpt = load_checkpoint(path)
    except (OSError, CheckpointError, ValueError, KeyError) as exc:
        raise _BadInput(f"cannot load checkpoint {path}: {exc}") from None
    if not ckpt.quantized:
        raise _BadInput(f"{path} is a float baseline, not a ternary checkpoint")
    from models.intref import IntRefModel
    try:
        return ckpt, IntRefModel(ckpt)
    except (ValueError, KeyError) as exc:
        raise _BadInput(f"cannot build the integer model of {path}: {exc}") from None


class _DeviceUnavailable(Exception):
    """Exit status 1."""


def _board_url(device: str, stack: contextlib.ExitStack) -> str:
    """The URL to open; ``sim`` starts the accelerator's board model (stopped with ``stack``)."""
    if device != "sim":
        return device
    try:
        from sim.board import accel_board_model
    except ImportError as exc:
        raise _DeviceUnavailable(f"the board model of the accelerator is not available: {exc}") from None
    try:
        return stack.enter_context(accel_board_model())
    except (RuntimeError, OSError) as exc:
        raise _DeviceUnavailable(f"the board model did not start: {exc}") from None


def _open_client(url: str, args):
    from sw.client import Client
    return Client.open(url, baud=args.baud, timeout=args.timeout, retries=args.retries)


def _progress(err):
    state = {"name": None, "t": 0.0}

    def report(name, done, total):
        now = time.monotonic()
        if name != state["name"] or done >= total or now - state["t"] > 0.2:
            state["name"], state["t"] = name, now
            pct = 100.0 * done / total if total else 100.0
            err.write(f"\rupload {name:6s} {done:9,d} / {total:9,d} bytes {pct:5.1f}%")
            if done >= total:
                err.write("\n")
            err.flush()
    return report


def run(args, out=sys.stdout, err=sys.stderr, open_client=_open_client) -> int:
    """The command with parsed ``args``; ``open_client(url, args) -> Client`` opens the link."""
    from sw.client import LinkError
    from sw.compiler import ModelTooLarge
    from sw.device import Device, ModelMismatch
    from sw.program import compile_model
    from sw.sampling import Sampler

    if args.timeout is None:
        args.timeout = 10.0 if args.device == "sim" else 1.0
    if args.n < 0:
        raise _BadInput("-n must be >= 0")
    if not args.temperature >= 0 or args.temperature == float("inf"):
        raise _BadInput("--temperature must be a finite number >= 0")
    if args.top_k < 0:
        raise _BadInput("--top-k must be >= 0")
    if args.timeout <= 0 or args.run_timeout <= 0 or args.retries < 0 or args.baud <= 0:
        raise _BadInput("--timeout, --run-timeout and --baud must be > 0, --retries >= 0")
    ckpt, ref = _load_model(args.checkpoint)
    vocab = ckpt.config.vocab_size
    prompt = args.prompt.encode("utf-8") or b"\n"
    tokens = list(prompt)
    if max(tokens) >= vocab:
        raise _BadInput(f"the prompt has bytes outside the model's vocabulary of {vocab}")

    with contextlib.ExitStack() as stack:
        url = _board_url(args.device, stack)
        client = stack.enter_context(open_client(url, args))
        dev = Device(client, run_timeout=args.run_timeout)
        info = dev.info()
        m = dev.manifest
        try:
            cm = compile_model(ref, info.lanes, info.rows, dev.format_name(info))
            dev.check(cm, info)
        except (ModelTooLarge, ModelMismatch) as exc:
            raise _BadInput(f"the model does not fit this board: {exc}") from None
        err.write(f"board: build {m.build_id:#010x}, {m.clk_hz / 1e6:g} MHz, engine {info.lanes} lanes x "
                  f"{info.rows} rows ({dev.format_name(info)}), program {len(cm.program)} instructions per token\n")
        dev.load(cm, progress=None if args.quiet else _progress(err))
        sampler = None
        if args.temperature > 0:
            sampler = Sampler(args.temperature, args.top_k, args.seed, ref.formats.logit_frac)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out.write(args.prompt)
        out.flush()

        def on_token(tok):
            out.write(decoder.decode(bytes([tok]) if tok < 256 else b""))
            out.flush()

        try:
            gen = dev.generate(tokens, args.n, sampler=sampler, on_token=on_token)
        except LinkError:
            out.write("\n")
            raise
        out.write(decoder.decode(b"", final=True) + "\n\n")
        s = dev.stats()
        link_b = s.link_bytes
        out.write(f"tokens: {len(prompt)} prompt + {len(gen)} generated ({s.tokens} steps in {s.runs} runs)\n")
        out.write(f"cycles/token: {s.step_cycles:,} total, {s.step_engine_cycles:,} GEMV engine, "
                  f"{s.other_cycles:,} other; engine utilisation {100 * s.engine_utilisation:.1f}%\n")
        if args.device == "sim":
            from boards import get_board
            board = get_board("ulx3s")
            out.write(f"projected on the {board.name} at its {board.soc_clk_hz / 1e6:g} MHz SoC clock: "
                      f"{board.soc_clk_hz / max(1, s.step_cycles):,.0f} tokens/s (the board model's "
                      f"{s.clk_hz / 1e6:g} MHz is a simulation clock)\n")
        else:
            out.write(f"projected at the bitstream clock ({s.clk_hz / 1e6:g} MHz): "
                      f"{s.projected_tokens_per_s:,.0f} tokens/s\n")
        out.write(f"measured on this device: {s.measured_tokens_per_s:,.1f} tokens/s "
                  f"({s.tokens} steps in {s.generate_seconds:.2f} s, link included)\n")
        out.write(f"link: upload {s.upload_bytes:,} bytes in {s.upload_seconds:.2f} s; generation "
                  f"{link_b:,} bytes ({s.link_seconds:.3f} s of line time at {client.baud:,} baud)\n")
        out.flush()
    if args.verify:
        want = _reference_tokens(ref, tokens, args.n, args, ref.formats.logit_frac)
        same = want == list(gen)
        out.write(f"identical to the integer reference (models.intref): {'yes' if same else 'NO'}\n")
        if not same:
            k = next(i for i, (a, b) in enumerate(zip(want + [None] * len(gen), gen)) if a != b)
            err.write(f"error: the board's token {k} differs from the integer reference's\n")
            return 1
    return 0


def _reference_tokens(ref, prompt, n: int, args, logit_frac: int) -> list[int]:
    """The tokens ``models.intref`` generates for the same prompt and sampler."""
    from sw.sampling import Sampler, argmax_first
    sampler = Sampler(args.temperature, args.top_k, args.seed, logit_frac) if args.temperature > 0 else None
    ref.reset(1)
    logits = None
    for t in prompt:
        logits = ref.step(int(t))
    out = []
    while len(out) < n:
        flat = logits.reshape(-1)
        tok = int(sampler(flat)) if sampler is not None else int(argmax_first(flat))
        out.append(tok)
        if len(out) < n:
            logits = ref.step(tok)
    return out


def main(argv=None, out=None, err=None, open_client=_open_client) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 1 device or link error)."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    from sw.client import LinkError
    try:
        return run(args, out, err, open_client)
    except _BadInput as exc:
        err.write(f"error: {exc}\n")
        return 2
    except (LinkError, _DeviceUnavailable) as exc:
        err.write(f"error: {type(exc).__name__}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write("error: interrupted\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
