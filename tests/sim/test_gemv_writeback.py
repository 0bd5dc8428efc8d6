# amaranth: UnusedElaboratable=no
import pytest
from amaranth import signed
from amaranth.lib import data

from hw.core.gemv_writeback import GemvWriteback
from hw.core.ports import UNIT_CMD_LAYOUT, MemReadSignature, MemWriteSignature, UnitResultSignature
from hw.pe.adder_tree import acc_width
from sim.cocotb_run import run_cocotb


def test_signature_and_validation():
    u = GemvWriteback(rows=8, acc_width=21, vmem_depth=4096)
    assert u.addr_width == 12 and u.product_width == 39
    assert u.cmd.payload.shape() == UNIT_CMD_LAYOUT
    assert u.i.payload.shape() == data.ArrayLayout(signed(21), 8)
    sig = u.signature.members
    assert sig["vmem_rd"].signature == MemReadSignature(12, signed(36))
    assert sig["vmem_wr"].signature == MemWriteSignature(12, signed(36))
    assert sig["result"].signature == UnitResultSignature()
    assert len(u.busy) == 1
    assert GemvWriteback(vmem_depth=100).addr_width == 7
    assert GemvWriteback(vmem_depth=1).addr_width == 1
    assert [p.signature for p in GemvWriteback(lanes=4).wr_ports] == [MemWriteSignature(12, signed(36))] * 4
    for name in ("rows", "acc_width", "vmem_depth"):
        for bad in (0, -1, 1.5, True, "8"):
            with pytest.raises(ValueError, match=name):
                GemvWriteback(**{name: bad})


@pytest.mark.parametrize("rows, aw, depth, lanes", [(8, acc_width(5632), 4096, 2), (3, 12, 100, 2), (1, 9, 64, 2),
                                                   (16, acc_width(512), 4096, 4), (6, 12, 100, 4), (3, 10, 64, 4),
                                                   (5, 9, 100, 1)])
def test_gemv_writeback_cocotb(rows, aw, depth, lanes):
    dut = GemvWriteback(rows=rows, acc_width=aw, vmem_depth=depth, lanes=lanes)
    params = {"rows": rows, "acc_width": aw, "vmem_depth": depth, "lanes": lanes}
    assert run_cocotb(dut, toplevel=f"gemv_writeback_{rows}x{aw}x{lanes}", test_module="sim.tb_gemv_writeback",
                      params=params) == 5


def test_cycles_formula():
    assert GemvWriteback(rows=8).cycles(7) == 7 * 4 + 10
    assert GemvWriteback(rows=16, lanes=4).cycles(12) == 12 * 4 + 11
    assert GemvWriteback(rows=6, lanes=4).cycles(3) == 3 * 2 + 11 and GemvWriteback(rows=5, lanes=1).cycles(2) == 20
    with pytest.raises(ValueError, match="lanes"):
        GemvWriteback(lanes=3)
