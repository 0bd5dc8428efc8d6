"""Cycles per token of the accelerator gateware, measured on the cycle-accurate board model.

Starts the board model (``sim/board.py``: the accelerator SoC under Verilator, the same gateware
``build.py`` puts on the ULX3S), uploads the shipped model through the link (``sw.device``), runs
tokens, and reads the core's own cycle counters (memory CTRL, ``sw.protocol.RunStatus``):

* measured: cycles per token (program start to HALT, the core's counter), the cycles in which the
  GEMV engine issued weight words, everything else;
* derived: PE-array utilisation = useful MAC cycles (sum of M x K over the token's GEMVs divided by
  lanes x rows) over the token's cycles;
* projected: tokens/s at the 75 MHz system clock and at the system clock of the ULX3S-85F SoC
  bitstream (``--report``, default ``build/ulx3s-85f/report.json``: the clock it was built for,
  when it met timing there), and the cycle model's projection for the
  overlapped, 16-lane design of ``docs/isa.md`` beside it;
* measured: upload bytes/s against the line rate, and host wall time per token on the model;
* with ``--breakdown`` (default): cycles per opcode, measured by ending the token program early
  (a HALT patched in after each instruction) and differencing the step cycles, i.e. how much
  longer the token gets by each instruction (a GEMV's own time counts where the prefix waits for
  it; the instructions it overlaps then cost less); the core's cycles do not depend on the data,
  so the prefixes need no state restore.

Usage: ``python bench/core_gateware.py [--tokens N] [--no-breakdown] [--out bench/results/core_gateware.json]``
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.intref import IntRefModel  # noqa: E402
from sim.board import accel_board_model  # noqa: E402
from sw import protocol as P  # noqa: E402
from sw.client import Client  # noqa: E402
from sw.device import Device, encode_words  # noqa: E402
from sw.isa import Instr, Op, encode  # noqa: E402
from sw.isa_sim import Core  # noqa: E402
from sw.program import MemorySizes, compile_model  # noqa: E402

SHIPPED = ROOT / "models" / "checkpoints" / "mmfree-tiny.safetensors"
SYS_CLK_HZ = 75_000_000
M = P.CoreMemory


def _step(dev: Device, token: int) -> P.RunStatus:
    dev.client.write(M.TOKMEM, 0, encode_words([token], 16, 2))
    dev.client.run(P.run_arg(1, 1))
    while True:
        st = dev.status()
        if st.state == P.RunState.IDLE:
            if st.error != P.RunError.NONE:
                raise RuntimeError(f"run error {st.error}")
            return st


def _soc_clock(rep: Path, info: P.CoreInfo | None = None) -> tuple[float | None, str]:
    """The system clock of the SoC bitstream whose build report is ``rep`` (``build.py``, design
    ``soc``): its PLL clock when the build met timing there, else None with the reason (also when
    the report's core has another engine shape than ``info``, the core measured)."""
    if not rep.exists():
        return None, f"no SoC build report {rep} (python build.py --board ulx3s)"
    r = json.loads(rep.read_text())
    if r.get("design") != "soc":
        return None, f"{rep} is a build of design {r.get('design')!r}, not the SoC"
    core = r.get("core")
    if info is not None and (core is None or (core.get("lanes"), core.get("rows")) != (info.lanes, info.rows)):
        shape = "an unrecorded engine shape" if core is None else f"{core.get('lanes')} x {core.get('rows')}"
        return None, f"{rep} is a SoC with {shape}, not the measured {info.lanes} x {info.rows} engine"
    clocks = r.get("clocks", {})
    if not r.get("timing_met") or not clocks:
        f = min((c["fmax_mhz"] for c in clocks.values() if c.get("fmax_mhz")), default=0)
        return None, f"the SoC build {rep} failed timing (Fmax {f:.1f} MHz): no bitstream"
    f = min(c["constraint_mhz"] for c in clocks.values())
    fmax = min(c["fmax_mhz"] for c in clocks.values())
    return f * 1e6, f"system clock of the bitstream in {rep} (timing met, routed Fmax {fmax:.1f} MHz)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=8, help="tokens to time (default 8)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-opcode breakdown")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core_gateware.json")
    ap.add_argument("--report", type=Path, default=ROOT / "build" / "ulx3s-85f" / "report.json",
                    help="build report of the SoC bitstream (default: that of python build.py --board ulx3s)")
    ap.add_argument("--engine-rows", type=int, choices=(4, 8, 16),
                    help="measure the core with this GEMV engine shape (build.py --engine-rows; default: the "
                         "core's 8); results go to bench/results/core_gateware_rows<N>.json unless --out")
    args = ap.parse_args(argv)
    if args.engine_rows is not None and args.out == ap.get_default("out"):
        args.out = args.out.with_name(f"core_gateware_rows{args.engine_rows}.json")

    ref = IntRefModel(SHIPPED)
    print("building / starting the board model (cached after the first build) ...", flush=True)
    with accel_board_model(engine_rows=args.engine_rows) as url, Client.open(url, timeout=10.0) as client:
        dev = Device(client, run_timeout=300.0)
        info = dev.info()
        sizes = MemorySizes(weight_words=info.wmem_words, k_max=info.k_max, vmem_words=info.vmem_words,
                            cmem_words=info.cmem_words, tmem_words=info.tmem_words, prog_words=info.pmem_words)
        cm = compile_model(ref, info.lanes, info.rows, dev.format_name(info), sizes=sizes)
        t0 = time.monotonic()
        dev.load(cm, progress=None)
        st = dev.stats()
        upload = {"bytes": st.upload_bytes, "seconds_wall": round(time.monotonic() - t0, 2)}
        print(f"uploaded {st.upload_bytes:,} link bytes in {upload['seconds_wall']} s of host time")

        tokens = list(b"ROMEO:\nWhat light")[:max(1, args.tokens)]
        per_token = []
        t0 = time.monotonic()
        for tok in tokens:
            s = _step(dev, tok)
            per_token.append((s.step_cycles, s.step_engine_cycles))
        wall = time.monotonic() - t0
        cyc = max(c for c, _ in per_token)
        eng = max(e for _, e in per_token)
        assert all(c == cyc for c, _ in per_token), "cycles per token vary with the data"

        breakdown, by_pc = {}, []
        if not args.no_breakdown:
            print(f"per-opcode breakdown: {len(cm.program)} prefixes of the token program ...", flush=True)
            prog = cm.program_image()
            halt = encode(Instr(Op.HALT)).to_bytes(16, "little")
            prev = 0
            for pc, ins in enumerate(cm.program[:-1]):
                dev.client.write(M.PMEM, 16 * (pc + 1), halt)
                c = _step(dev, tokens[0]).step_cycles
                dev.client.write(M.PMEM, 16 * (pc + 1), prog[16 * (pc + 1):16 * (pc + 2)])
                breakdown[ins.op.name] = breakdown.get(ins.op.name, 0) + (c - prev)
                by_pc.append({"pc": pc, "instr": str(ins), "cycles": c - prev, "end": c})
                prev = c
            breakdown["HALT"] = breakdown.get("HALT", 0) + cyc - prev
            by_pc.append({"pc": len(cm.program) - 1, "instr": "HALT", "cycles": cyc - prev, "end": cyc})

    soc_hz, fsrc = _soc_clock(args.report, info)
    macs = cm.gemv_macs / (info.lanes * info.rows)
    proj = Core(cm, width=16)
    proj.reset()
    proj.step(tokens[0])
    result = {
        "model": SHIPPED.name,
        "core": {"lanes": info.lanes, "rows": info.rows, "weight_format": dev.format_name(info),
                 "vector_width": info.vector_width,
                 "sequencer": "in order; a GEMV, and a vector instruction that writes no register, run in the "
                              "background"},
        "measured_on": "board model (Verilator, cycle-accurate gateware of the SoC)",
        "cycles_per_token": cyc, "engine_cycles": eng, "other_cycles": cyc - eng,
        "useful_mac_cycles": macs, "pe_utilisation": macs / cyc,
        "projected_tokens_per_s_75mhz": SYS_CLK_HZ / cyc,
        "soc_clock_hz": soc_hz, "soc_clock_source": fsrc,
        "projected_tokens_per_s_at_soc_clock": (soc_hz / cyc) if soc_hz else None,
        "cycle_model_16_lane_overlapped": {"cycles_per_token": proj.cycles.total,
                                           "tokens_per_s_75mhz": SYS_CLK_HZ / proj.cycles.total},
        "board_model_wall_s_per_token": wall / len(tokens), "upload": upload,
        "cycles_by_opcode": dict(sorted(breakdown.items(), key=lambda kv: -kv[1])),
        # how much longer the token gets by each instruction (the program cut after it), in order
        "cycles_by_instruction": by_pc,
    }
    print(f"cycles/token (measured, gateware): {cyc:,}  = engine {eng:,} + other {cyc - eng:,}")
    print(f"PE utilisation (derived): {100 * macs / cyc:.1f} %  ({macs:,.0f} useful MAC cycles)")
    print(f"projected: {SYS_CLK_HZ / cyc:,.0f} tokens/s at the 75 MHz system clock")
    if soc_hz:
        print(f"projected: {soc_hz / cyc:,.0f} tokens/s at {soc_hz / 1e6:.1f} MHz ({fsrc})")
    else:
        print(f"(no SoC bitstream clock: {fsrc})")
    print(f"cycle model of the overlapped 16-lane design (projected): {proj.cycles.total:,} cycles/token")
    print(f"board model: {wall / len(tokens):.3f} s of host time per token")
    if breakdown:
        print("cycles by opcode (measured):")
        for k, v in result["cycles_by_opcode"].items():
            print(f"  {k:8s} {v:8,d}  {100 * v / cyc:5.1f} %")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"saved {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
