"""``python -m sw.demo``: the shipped ternary LM on the instruction-level model of the core.

Compiles the shipped checkpoint into the core's memory images and straight-line token program
(:mod:`sw.program`), then runs the prompt and the generation on the instruction-level model of
the core (:mod:`sw.isa_sim`), checking every token's logits bit for bit against the integer
reference (:mod:`models.intref`), and streams the text. It ends with the core's cycles per token
from its cycle model and the tokens/s they project at the board's 75 MHz clock.

What runs here is the core's instruction set executed in Python, in seconds and without
Verilator; the cycles are the cycle model's projection for the overlapped, 16-lane design of
docs/isa.md. ``make demo`` runs the same program on the gateware instead (``python -m sw.run
--device sim``, the cycle-accurate board model), where the cycles are measured.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CKPT = ROOT / "models" / "checkpoints" / "mmfree-tiny.safetensors"
SYS_CLK_HZ = 75_000_000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sw.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("-n", type=int, default=200, help="bytes to generate")
    ap.add_argument("--lanes", type=int, default=32)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--format", default="trits5", choices=["2bit", "trits5"])
    ap.add_argument("--vector-width", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="0 = greedy, the core's own argmax (default); > 0 samples on the host from the core's logits")
    ap.add_argument("--top-k", type=int, default=0, help="with --temperature: keep the k largest logits")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    args = ap.parse_args(argv)

    from models.checkpoint import CheckpointError, load_checkpoint
    from models.intref import IntRefModel
    from sw.isa_sim import Core
    from sw.program import compile_model

    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (OSError, CheckpointError) as exc:
        print(f"error: cannot load {args.checkpoint}: {exc}", file=sys.stderr)
        return 2
    cfg = ckpt.config
    print(f"model: {args.checkpoint.name}: d={cfg.d_model}, L={cfg.n_layers}, I={cfg.d_ff}, "
          f"vocab {cfg.vocab_size}, {cfg.ternary_weights:,} ternary weights")
    ref = IntRefModel(ckpt)
    cm = compile_model(ref, args.lanes, args.rows, args.format)
    print(f"core:  GEMV engine {args.lanes} lanes x {args.rows} rows ({args.format} weights), "
          f"vector unit {args.vector_width} lanes; program {len(cm.program)} instructions per token")
    core = Core(cm, width=args.vector_width)
    core.reset()
    ref.reset(1)

    import numpy as np
    rng = np.random.default_rng(args.seed)

    def step(token: int) -> int:
        logits, nxt = core.step(token)
        expected = ref.step(token)
        if not (logits.shape == expected.shape and (logits == expected).all()):
            raise SystemExit(f"error: the core's logits differ from the integer reference at token {token}")
        if args.temperature > 0:
            z = ref.logits_float(logits).astype(np.float64) / args.temperature
            if 0 < args.top_k < z.size:
                z[z < np.sort(z)[-args.top_k]] = -np.inf
            p = np.exp(z - z.max())
            nxt = int(rng.choice(z.size, p=p / p.sum()))
        return nxt

    prompt = args.prompt.encode() or b"\n"
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    t0 = time.monotonic()
    for b in prompt:
        nxt = step(b)
    out = []
    for _ in range(args.n):
        out.append(nxt)
        sys.stdout.write(bytes([nxt]).decode("latin-1"))
        sys.stdout.flush()
        nxt = step(nxt)
    wall = time.monotonic() - t0
    tokens = len(prompt) + args.n
    c = core.cycles
    print("\n")
    print(f"every one of {tokens} tokens: logits identical to the integer reference (bit for bit)")
    print(f"cycles per token (cycle model, projected): {c.total:,} "
          f"(GEMV engine busy {c.engine_busy:,}, PE-array utilisation {100 * c.utilisation(args.lanes, args.rows):.1f}%)")
    print(f"projected on the board at {SYS_CLK_HZ / 1e6:.0f} MHz: {SYS_CLK_HZ / c.total:,.0f} tokens/s")
    print(f"this run: {tokens / wall:.1f} tokens/s in the Python instruction-level model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
