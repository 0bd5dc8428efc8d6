#!/usr/bin/env python3
"""Build a bitstream for a board and report resources and timing.

    python build.py --board ulx3s              # the accelerator SoC on the ULX3S-85F
    python build.py --board ulx3s-25f --design demo
    python build.py --board ulx3s --program    # build, then load with openFPGALoader
    python build.py --board ulx3s --sys-clock-mhz 75   # the SoC at another system clock

Writes build/<board>/ with the .bit, the tool logs and report.json (LUT4, FF, DP16KD, MULT18X18D
used/available, Fmax per clock against its constraint, pass/fail, tool versions, wall time) and
prints a short table. Exits non-zero with a one-line reason when a tool fails, resources overflow
or timing is not met. The YoWASP tools are taken from this interpreter's environment, so
`.venv/bin/python build.py ...` works without activating the environment.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from boards import BOARDS, UnknownBoard, get_board  # noqa: E402
from boards.flow import ROUTERS, placer_density_args  # noqa: E402

#: nextpnr placement density of the accelerator SoC: at nextpnr's default (0.9) its router congests
#: and stalls; the current core's SoC builds that routed were placed at 0.6 (docs/core.md).
SOC_PLACER_DENSITY = 0.6

DESIGNS = {
    "demo": "PLL + a ternary adder-tree PE fed by LFSRs, result on the LEDs (--lanes, --rows)",
    "link": "PLL + the UART link (framed protocol, HELLO/WRITE/READ/CRC/STATUS/RESET) with a test memory",
    "soc": "PLL + the link + the accelerator core (32x8 trits5 GEMV engine, vector and scalar units, "
           "sequencer): what python -m sw.run drives",
}


def with_sys_clock(board, mhz: float):
    """``board`` with its PLL output set to ``mhz``; ValueError when the PLL cannot make it exactly
    or the link's baud rate does not divide it."""
    import dataclasses

    from hw.pll import pll_divisors
    hz = round(mhz * 1e6)
    if not 1e6 <= hz <= 400e6:
        raise ValueError(f"--sys-clock-mhz {mhz:g} is outside 1..400 MHz")
    if hz % board.baud:
        raise ValueError(f"--sys-clock-mhz {mhz:g}: the link's {board.baud} baud does not divide {hz} Hz "
                         f"(multiples of {board.baud / 1e6:g} MHz work)")
    pll_divisors(board.clk_in_hz, hz)      # raises with the reason
    return dataclasses.replace(board, sys_clk_hz=hz)


def make_design(name: str, board, args):
    if name == "demo":
        from hw.demo_top import DemoTop
        return DemoTop(sys_clk_hz=board.sys_clk_hz, clk_in_hz=board.clk_in_hz, lanes=args.lanes, rows=args.rows)
    if name == "link":
        from hw.link_top import LinkTop
        return LinkTop(sys_clk_hz=board.sys_clk_hz, clk_in_hz=board.clk_in_hz, baud=board.baud)
    if name == "soc":
        from boards.fit import check_fit
        from hw.core.core import AcceleratorCore
        from hw.link_top import LinkTop
        core = AcceleratorCore(**AcceleratorCore.shape_for(args.engine_rows))
        check_fit(core.block_memories, board.dp16kd, board.device)    # DoesNotFit before any tool runs
        return LinkTop(sys_clk_hz=board.sys_clk_hz, clk_in_hz=board.clk_in_hz, baud=board.baud, core=core)
    raise ValueError(name)


def print_table(report: dict, out=sys.stdout):
    print(f"\n{report['board']} ({report['device']}), design '{report['design']}'", file=out)
    print(f"  {'resource':<12}{'used':>9}{'available':>11}{'%':>7}", file=out)
    for name, u in report["resources"].items():
        pct = 100.0 * u["used"] / u["available"] if u["available"] else 0.0
        print(f"  {name:<12}{u['used']:>9}{u['available']:>11}{pct:>6.1f}%", file=out)
    for clk, c in report["clocks"].items():
        status = "met" if c["met"] else "FAILED"
        print(f"  clock {clk}: Fmax {c['fmax_mhz']:.1f} MHz, constraint {c['constraint_mhz']:.1f} MHz: {status}",
              file=out)
    print(f"  wall time {report['wall_time_s']['total_s']:.1f} s", file=out)


def program(bitstream: Path) -> int:
    loader = shutil.which("openFPGALoader")
    if loader is None:
        print("error: openFPGALoader not found on PATH; install it (Debian: apt install openfpgaloader) "
              f"or load {bitstream} with fujprog", file=sys.stderr)
        return 2
    proc = subprocess.run([loader, "-b", "ulx3s", str(bitstream)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        print(f"error: openFPGALoader could not program the board: {reason} "
              "(is the ULX3S plugged in and its USB port accessible?)", file=sys.stderr)
        return 2
    print(f"programmed {bitstream}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="boards: " + ", ".join(sorted(BOARDS)) + "; designs: "
               + "; ".join(f"{k}: {v}" for k, v in DESIGNS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", default="ulx3s", help="board name (default: ulx3s = ULX3S-85F)")
    parser.add_argument("--design", default="soc", help="what to build (default: soc)")
    parser.add_argument("--out", type=Path, help="build folder (default: build/<board>)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--router", choices=ROUTERS, default="router1",
                        help="nextpnr router (default router1; router2 negotiates congestion, often faster "
                             "on a full chip)")
    parser.add_argument("--placer-density", type=float, metavar="D",
                        help="maximum placement density of nextpnr's analytic placer, 0.3 to 1 (default: "
                             f"{SOC_PLACER_DENSITY} for the soc, whose router congests at nextpnr's 0.9; 0.9 for "
                             "the others); lower spreads the logic")
    parser.add_argument("--lanes", type=int, default=64, help="demo design: PE lanes (activations per cycle)")
    parser.add_argument("--rows", type=int, default=1, help="demo design: PE output rows in parallel")
    parser.add_argument("--engine-rows", type=int, choices=(4, 8, 16),
                        help="soc design: output rows of the GEMV engine's PE array (default: the core's, 8; 16 is "
                             "faster but does not fit the 85F with room to route); "
                             "the weight memory keeps its block RAM: its depth is 32768 / rows words")
    parser.add_argument("--sys-clock-mhz", type=float,
                        help="system clock made by the PLL, in MHz (default: the board's clock for the design: "
                             "on the ULX3S 45 for the soc, where its build meets timing, 75 for the others); "
                             "the link's baud rate must divide it exactly and the PLL make it from 25 MHz "
                             "(30, 45, 60, 75, ...)")
    parser.add_argument("--timeout-min", type=float, default=240, metavar="MIN",
                        help="stop a tool (synthesis, place and route) that runs longer than this many minutes "
                             "(default 240: the accelerator SoC's place and route takes 1-2 hours on a 2-core "
                             "machine)")
    parser.add_argument("--program", action="store_true", help="load the bitstream with openFPGALoader")
    args = parser.parse_args(argv)

    try:
        board = get_board(args.board)
    except UnknownBoard as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.design not in DESIGNS:
        parser.exit(2, f"error: unknown design {args.design!r}; known designs: {', '.join(DESIGNS)}\n")
    try:
        placer_density_args(args.placer_density)
    except ValueError:
        parser.exit(2, f"error: --placer-density must lie in [0.3, 1], not {args.placer_density}\n")
    if not args.timeout_min > 0:
        parser.exit(2, f"error: --timeout-min must be positive, not {args.timeout_min}\n")
    mhz = args.sys_clock_mhz
    if mhz is None and args.design == "soc":
        mhz = board.soc_clk_hz / 1e6
    if mhz is not None:
        try:
            board = with_sys_clock(board, mhz)
        except ValueError as exc:
            parser.exit(2, f"error: {exc}\n")

    from boards.fit import DoesNotFit
    from boards.flow import FlowError, run_flow
    out = args.out or ROOT / "build" / board.name
    try:
        design = make_design(args.design, board, args)
    except DoesNotFit as exc:
        parser.exit(2, f"error: {args.design} on {board.name}: {exc}\n")
    density = args.placer_density
    if density is None and args.design == "soc":
        density = SOC_PLACER_DENSITY
    try:
        result = run_flow(design, board, out, seed=args.seed, router=args.router, placer_density=density,
                          progress=lambda msg: print(msg, flush=True), timeout=60 * args.timeout_min)
    except FlowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = dict(result.report, design=args.design)
    if args.design == "soc":              # the core's shape: what the host compiles for (INFO)
        info = design.core.info
        report["core"] = {"lanes": info.lanes, "rows": info.rows, "wmem_words": info.wmem_words}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"  bitstream {result.bitstream}\n  report    {out / 'report.json'}")
    if not report["timing_met"]:
        failed = [c for c, v in report["clocks"].items() if not v["met"]]
        print(f"error: timing not met on {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.program:
        return program(result.bitstream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
