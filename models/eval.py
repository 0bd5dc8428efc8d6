"""Evaluate the float baseline, the ternary QAT model and the integer reference on held-out text.

Usage::

    python -m models.eval                      # 16 KB of the validation split, 16 sequences
    python -m models.eval --bytes 8192 --batch 8 --out bench/results/eval.json
    python -m models.eval --approx-only        # only the table / rsqrt / reciprocal errors

Protocol: the first ``--bytes`` bytes of the held-out works (:func:`models.data.load_corpus`)
are cut into ``--batch`` contiguous sequences of ``bytes / batch`` bytes. Every model runs them
in recurrent mode (one byte per step, the state carried along each sequence, zero at its
start); every byte but the first of each sequence is predicted from its prefix. Bits per byte
is the mean negative log2-likelihood of those bytes. For the integer reference the likelihood
is the softmax of its integer logits scaled back to float (``logits * 2**-logit_frac``), and
"top-1 agreement" is the fraction of predicted positions where its argmax (first index on
ties) equals the argmax of the ternary model's float logits.

Also measured on the same run (written to the JSON and used by ``docs/arithmetic.md``): the
relative L2 error of the residual stream after the embedding and after every layer, of every
layer's state, and of the logits, intref against the ternary float model; saturation counts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["measure_approximations", "sequences", "eval_torch", "eval_intref", "markdown_table", "main"]

DEFAULT_TERNARY = Path("models/checkpoints/mmfree-tiny.safetensors")
DEFAULT_FLOAT = Path("models/checkpoints/mmfree-tiny-float.safetensors")


def measure_approximations() -> dict:
    """Errors of the vector unit's approximations against float64, over their whole input range.

    Returns
    -------
    dict
        ``sigmoid`` (all 18-bit inputs in Q6.11), ``silu_q11`` (same inputs, Q.11 output),
        ``rsqrt`` (all 49,152 normalised inputs), ``recip`` (all 32,768 normalised inputs):
        max and mean absolute error (in real units, and in output LSBs for rsqrt/recip) and max
        relative error.
    """
    from .fixedpoint import recip_norm, rsqrt_norm, sigmoid_q16, silu_fx

    y = np.arange(-(1 << 17), 1 << 17)
    x = y / 2.0 ** 11
    sig = 1.0 / (1.0 + np.exp(-x))
    e_sig = np.abs(sigmoid_q16(y, 11) / 65536.0 - sig)
    e_silu = np.abs(silu_fx(y, 11, 11) / 2.0 ** 11 - x * sig)
    ms = np.arange(1 << 14, 1 << 16)
    q = rsqrt_norm(ms)
    ex_q = 2.0 ** 23 / np.sqrt(ms)
    mn = np.arange(1 << 15, 1 << 16)
    r = recip_norm(mn)
    ex_r = 2.0 ** 32 / mn
    # int8 codes of the normalise-quantise block against exact rational rounding of 127 u / max|u|
    from .intref import block_normalize, int8_codes, mant17_of_float, output_scale, rsqrt_sum_squares

    rng = np.random.default_rng(0)
    z = (rng.standard_normal((4096, 128)) * np.exp2(rng.integers(0, 30, (4096, 1)))).astype(np.int64)
    wc = rng.integers(-(1 << 17) + 1, 1 << 17, 128)
    zp, _ = block_normalize(z)
    codes, mn, t, _ = int8_codes(zp, wc)
    u = zp * wc
    m = np.abs(u).max(axis=1, keepdims=True)
    exact = np.sign(u) * ((254 * np.abs(u) + m) // (2 * m))
    diff = codes - exact
    # per-token output scale against c * m / sqrt(ss) in float64
    ss = rng.integers(1, 1 << 45, 4096)
    mm = rng.integers(1 << 10, 1 << 33, 4096)
    c = float(np.exp2(-20.3))
    cm, ce = mant17_of_float(c)
    qs, k, _ = rsqrt_sum_squares(ss)
    tt = np.array([int(x).bit_length() - 16 for x in mm])
    mnn = mm >> tt
    sm, se = output_scale(mnn, tt, qs, k, cm, ce)
    ex = c * mm / np.sqrt(ss.astype(np.float64))
    rel_scale = np.abs(sm * np.exp2(se.astype(np.float64)) - ex) / ex
    return {
        "int8_codes": {"inputs": "4096 random tokens of K=128, magnitudes 2^0..2^30, random 18-bit wc",
                       "fraction_differing_from_exact_rounding": float(np.mean(diff != 0)),
                       "max_abs_code_difference": int(np.abs(diff).max()),
                       "max_abs_code": int(np.abs(codes).max())},
        "output_scale": {"inputs": "4096 random (max|u| in 2^10..2^33, ss in 1..2^45)",
                         "max_rel": float(rel_scale.max()), "mean_rel": float(rel_scale.mean())},
        "sigmoid": {"inputs": "all 2^18 Q6.11 values", "max_abs": float(e_sig.max()), "mean_abs": float(e_sig.mean()),
                    "max_abs_lsb_q16": float(e_sig.max() * 65536)},
        "silu_q11": {"inputs": "all 2^18 Q6.11 values", "max_abs": float(e_silu.max()), "mean_abs": float(e_silu.mean()),
                     "max_abs_over_|x|<=4": float(e_silu[np.abs(x) <= 4].max())},
        "rsqrt": {"inputs": "all 2^14..2^16-1", "max_abs_lsb": float(np.abs(q - ex_q).max()),
                  "mean_abs_lsb": float(np.abs(q - ex_q).mean()), "max_rel": float((np.abs(q - ex_q) / ex_q).max())},
        "recip": {"inputs": "all 2^15..2^16-1", "max_abs_lsb": float(np.abs(r - ex_r).max()),
                  "mean_abs_lsb": float(np.abs(r - ex_r).mean()), "max_rel": float((np.abs(r - ex_r) / ex_r).max())},
    }


def sequences(n_bytes: int, batch: int) -> np.ndarray:
    """The evaluation sequences: the first ``n_bytes`` held-out bytes as ``(batch, n_bytes // batch)``."""
    from .data import load_corpus

    _, val = load_corpus()
    if len(val) < n_bytes:
        raise SystemExit(f"validation split has only {len(val)} bytes")
    per = n_bytes // batch
    return np.frombuffer(val[: per * batch], dtype=np.uint8).astype(np.int64).reshape(batch, per)


def _nll_bits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log2-likelihood of ``targets`` under softmax(logits), float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return (lse - z[np.arange(len(targets)), targets]) / math.log(2)


def eval_torch(ckpt, seqs: np.ndarray, record: bool = False):
    """Recurrent-mode bits per byte of a float or frozen ternary :class:`MMFreeLM`.

    With ``record=True`` also returns per-step logits, hidden states and states (float64).
    """
    import torch

    from .mmfree import MMFreeLM

    model = MMFreeLM.from_checkpoint(ckpt)
    b, t = seqs.shape
    state = model.init_state(b)
    bits, rec = [], []
    with torch.no_grad():
        for k in range(t - 1):
            logits, state, hidden = model.step(torch.from_numpy(seqs[:, k]), state, return_hidden=True)
            lg = logits.double().numpy()
            bits.append(_nll_bits(lg, seqs[:, k + 1]))
            if record:
                rec.append((lg, [h.double().numpy() for h in hidden], [s.double().numpy() for s in state]))
    return float(np.mean(bits)), rec


def eval_intref(ir, seqs: np.ndarray, reference=None) -> dict:
    """Recurrent-mode bits per byte of an :class:`IntRefModel`, and its errors against ``reference``.

    ``reference`` is the ``record`` list of :func:`eval_torch` for the ternary model.
    """
    from .intref import argmax_first

    b, t = seqs.shape
    ir.reset(b)
    bits, agree = [], []
    h_err = np.zeros(ir.config.n_layers + 1)
    s_err = np.zeros(ir.config.n_layers)
    lg_err = 0.0
    sats: dict[str, int] = {}
    shift_range = [10 ** 9, -(10 ** 9)]
    for k in range(t - 1):
        logits, tr = ir.step(seqs[:, k], trace=True)
        lf = ir.logits_float(logits)
        bits.append(_nll_bits(lf, seqs[:, k + 1]))
        for name, v in tr["saturations"].items():
            sats[name] = sats.get(name, 0) + v
        for where in [tr] + tr["layers"]:
            for name, v in where.items():
                if name.endswith(".out_shift"):
                    shift_range[0] = min(shift_range[0], int(v.min()))
                    shift_range[1] = max(shift_range[1], int(v.max()))
        if reference is not None:
            rl, rh, rs = reference[k]
            agree.append(argmax_first(logits) == rl.argmax(axis=1))
            for i, (hi, hr) in enumerate(zip(tr["h"], rh)):
                h_err[i] += np.linalg.norm(ir.to_float(hi, "h") - hr) / np.linalg.norm(hr)
            for i, (lay, sr) in enumerate(zip(tr["layers"], rs)):
                s_err[i] += np.linalg.norm(ir.to_float(lay["s"], "s", i) - sr) / max(np.linalg.norm(sr), 1e-30)
            lg_err += np.linalg.norm(lf - rl) / np.linalg.norm(rl)
    out = {"bpb": float(np.mean(bits)), "saturations": {k: v for k, v in sats.items() if v},
           "saturated_elements_total": int(sum(sats.values())), "output_shift_range": shift_range}
    if reference is not None:
        n = t - 1
        out.update(top1_agreement=float(np.mean(agree)),
                   hidden_rel_l2_mean=[float(x / n) for x in h_err],
                   state_rel_l2_mean=[float(x / n) for x in s_err],
                   logits_rel_l2_mean=float(lg_err / n))
    return out


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def markdown_table(res: dict) -> str:
    """The README table of an evaluation result."""
    rows = ["| model | weights | activations | bits/byte | top-1 vs ternary |", "|---|---|---|---|---|"]
    if res.get("float_baseline"):
        rows.append(f"| float baseline | float32 | float32 | {res['float_baseline']['bpb']:.4f} | - |")
    rows.append(f"| ternary QAT (float arithmetic) | ternary | int8 | {res['ternary']['bpb']:.4f} | 1 |")
    ir = res["intref"]
    rel = 100.0 * (ir["bpb"] / res["ternary"]["bpb"] - 1.0)
    rows.append(f"| intref (integer, bit-exact hardware) | ternary | int8 + fixed point | {ir['bpb']:.4f} "
                f"({rel:+.2f} %) | {100 * ir['top1_agreement']:.2f} % |")
    return "\n".join(rows)


def main(argv=None) -> int:
    """Command line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m models.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_TERNARY, help="ternary checkpoint")
    p.add_argument("--float-checkpoint", type=Path, default=DEFAULT_FLOAT, help="non-ternary baseline")
    p.add_argument("--bytes", type=int, default=16384, help="held-out bytes evaluated (default 16384)")
    p.add_argument("--batch", type=int, default=16, help="number of contiguous sequences (default 16)")
    p.add_argument("--out", type=Path, default=Path("bench/results/eval.json"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--approx-only", action="store_true", help="only measure the approximations")
    args = p.parse_args(argv)

    approx = measure_approximations()
    if args.approx_only:
        print(json.dumps(approx, indent=2))
        return 0

    import torch

    from .checkpoint import load_checkpoint
    from .intref import IntRefModel

    torch.set_num_threads(args.threads)
    seqs = sequences(args.bytes, args.batch)
    res: dict = {
        "command": "python -m models.eval " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "protocol": (f"first {seqs.size} bytes of the held-out works as {seqs.shape[0]} contiguous sequences of "
                     f"{seqs.shape[1]} bytes, recurrent mode, zero state at each sequence start, "
                     f"{seqs.shape[0] * (seqs.shape[1] - 1)} predicted bytes"),
        "approximations": approx,
    }
    t0 = time.time()
    if args.float_checkpoint.exists():
        fck = load_checkpoint(args.float_checkpoint)
        bpb, _ = eval_torch(fck, seqs)
        res["float_baseline"] = {"checkpoint": str(args.float_checkpoint), "sha256": _sha256(args.float_checkpoint),
                                 "bpb": bpb}
        print(f"float baseline  bpb {bpb:.4f}   ({time.time() - t0:.0f} s)", flush=True)
    else:
        print(f"float baseline: {args.float_checkpoint} not found, skipped", flush=True)
    ck = load_checkpoint(args.checkpoint)
    t0 = time.time()
    bpb, rec = eval_torch(ck, seqs, record=True)
    res["ternary"] = {"checkpoint": str(args.checkpoint), "sha256": _sha256(args.checkpoint), "bpb": bpb,
                      "config": ck.config.to_dict()}
    print(f"ternary QAT     bpb {bpb:.4f}   ({time.time() - t0:.0f} s)", flush=True)
    t0 = time.time()
    ir = IntRefModel(ck)
    r = eval_intref(ir, seqs, rec)
    r["act_fracs"] = ir.act_fracs()
    r["calibration_max"] = ir.calibration_max
    r["formats"] = {k: v for k, v in ir.constants().items() if k.startswith("format.")}
    res["intref"] = r
    print(f"intref          bpb {r['bpb']:.4f}   top-1 agreement {100 * r['top1_agreement']:.2f} %   "
          f"({time.time() - t0:.0f} s)", flush=True)
    print("hidden-state rel. L2 error per layer (embedding, layer 0..):",
          " ".join(f"{x:.2e}" for x in r["hidden_rel_l2_mean"]))
    print("state rel. L2 error per layer:", " ".join(f"{x:.2e}" for x in r["state_rel_l2_mean"]))
    print("saturated elements:", r["saturated_elements_total"])
    res["markdown"] = markdown_table(res)
    print()
    print(res["markdown"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
