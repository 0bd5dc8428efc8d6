"""bench/congestion.py: nextpnr router2 heatmaps summed by block of the SoC."""

import importlib.util
import json

import pytest

from sim.cocotb_run import ROOT


def _load():
    spec = importlib.util.spec_from_file_location("congestion", ROOT / "bench" / "congestion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_nets_are_attributed_to_their_block():
    c = _load()
    assert c.block_of("link.core.vu.mz1_s0_0[3]") == "vu"
    assert c.block_of("link.core.engine.waddr[8]") == "engine"
    assert c.block_of("link.core.wb.acc[1]") == "wb" and c.block_of("link.core.su.r_TRELLIS_FF_Q") == "su"
    assert c.block_of("link.core.cmem3_r_addr[2]") == "banks" and c.block_of("link.core.vmem0_r_data") == "banks"
    assert c.block_of("link.core.g_residual_LUT4_C_Z[1]") == "core"
    assert c.block_of("link.protocol.err") == "link" and c.block_of("pll.locked_sync_LUT4_D_Z") == "other"


def test_summary_by_block_and_top_nets(tmp_path):
    c = _load()
    heat = tmp_path / "heat"
    heat.mkdir()
    (heat / "h_congestion_by_net_1.csv").write_text(
        "link.core.vu.a[0],30\nlink.core.vu.b,10\nlink.core.engine.waddr[8],40\npll.locked_sync,20\nbad line\n")
    (heat / "h_congestion_by_net_2.csv").write_text("link.core.vu.a[0],5\nlink.core.su.r,15\n")
    s = c.summarise(heat, top=2)
    assert list(s) == [1, 2]
    assert s[1]["overuse"] == 100 and s[1]["by_block"]["vu"] == {"overuse": 40, "share": 0.4}
    assert s[1]["by_block"]["engine"]["share"] == 0.4 and s[1]["by_block"]["other"]["overuse"] == 20
    assert s[1]["top_nets"] == [{"net": "link.core.engine.waddr[8]", "overuse": 40},
                                {"net": "link.core.vu.a[0]", "overuse": 30}]
    assert s[2]["by_block"] == {"su": {"overuse": 15, "share": 0.75}, "vu": {"overuse": 5, "share": 0.25}}
    out = tmp_path / "c.json"
    (tmp_path / "top.json").write_text("{}")
    assert c.main([str(tmp_path), "--summarise-only", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["passes"]["2"]["overuse"] == 20


def test_missing_netlist_is_a_clear_error(tmp_path, capsys):
    c = _load()
    with pytest.raises(SystemExit) as e:
        c.main([str(tmp_path / "nothing")])
    assert e.value.code == 2 and "top.json not found" in capsys.readouterr().err


def test_placer_density_reaches_nextpnr(tmp_path, capsys):
    c = _load()
    args = c.nextpnr_args({"device": "LFE5U-45F"}, "x.tim", 0.6)
    assert args[args.index("--placer-heap-beta") + 1] == "0.6" and "--45k" in args
    assert "--placer-heap-beta" not in c.nextpnr_args({}, "x.tim") and "--85k" in c.nextpnr_args({}, "x.tim")
    (tmp_path / "top.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        c.main([str(tmp_path), "--placer-density", "0.2"])
    assert e.value.code == 2 and "--placer-density must lie in [0.3, 1]" in capsys.readouterr().err
