# amaranth: UnusedElaboratable=no
import numpy as np
import pytest

from hw.gemv import GemvEngine
from hw.pe.adder_tree import acc_width
from sim.cocotb_run import run_cocotb
from sw.gemv_layout import act_words, gemv_chunks, gemv_weight_words, row_bits
from sw.packing import unpack


def test_signature_and_validation():
    e = GemvEngine(lanes=8, rows=2, weight_depth=64, k_max=64)
    assert e.chunks_max == 8 and e.word_bits == 2 * 16 and e.weight_bits == 64 * 32
    assert len(e.o.payload.as_value()) == 2 * acc_width(64)
    with pytest.raises(ValueError, match="multiple of lanes"):
        GemvEngine(lanes=8, k_max=60)
    with pytest.raises(ValueError, match="weight_format"):
        GemvEngine(weight_format="int4")
    with pytest.raises(ValueError, match="rows"):
        GemvEngine(rows=0)


@pytest.mark.parametrize("fmt", ["2bit", "trits5"])
def test_layout_round_trip(fmt):
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (7, 21)).astype(np.int8)
    lanes, rows = 8, 3
    words = gemv_weight_words(w, lanes, rows, fmt)
    groups, chunks = gemv_chunks(7, 21, lanes, rows)
    assert len(words) == groups * chunks == 3 * 3
    rb = row_bits(lanes, fmt)
    back = np.zeros((groups * rows, chunks * lanes), np.int8)
    for g in range(groups):
        for c in range(chunks):
            for r in range(rows):
                seg = (words[g * chunks + c] >> (r * rb)) & ((1 << rb) - 1)
                back[g * rows + r, c * lanes:(c + 1) * lanes] = unpack(seg.to_bytes(rb // 8, "little"), lanes, fmt)
    assert (back[:7, :21] == w).all() and not back[7:].any() and not back[:, 21:].any()
    assert act_words([1, -1], 4) == [0x0000FF01]
    with pytest.raises(ValueError):
        act_words([128], 4)


@pytest.mark.parametrize("lanes,rows,fmt", [(8, 4, "2bit"), (10, 2, "trits5")])
def test_gemv_cocotb(lanes, rows, fmt):
    k_max = lanes * 8
    e = GemvEngine(lanes=lanes, rows=rows, weight_depth=256, k_max=k_max, weight_format=fmt)
    p = {"lanes": lanes, "rows": rows, "k_max": k_max, "fmt": fmt, "acc_width": acc_width(k_max), "latency": e.latency,
         "waw": len(e.cmd.payload.base), "gw": len(e.cmd.payload.groups), "cw": len(e.cmd.payload.chunks)}
    assert run_cocotb(e, toplevel=f"gemv_{fmt}", test_module="sim.tb_gemv", params=p) == 4


@pytest.mark.parametrize("lanes,fmt", [(16, "2bit"), (32, "2bit"), (32, "trits5"), (64, "2bit"), (64, "trits5")])
def test_cycle_model_uses_the_engine_latency(lanes, fmt):
    # The core's cycle model (sw.isa_sim) must charge what the gateware takes.
    from sw.isa_sim import gemv_latency
    e = GemvEngine(lanes=lanes, rows=8, weight_depth=64, k_max=lanes * 16, weight_format=fmt)
    assert gemv_latency(lanes, fmt) == e.latency - 1 + 3
