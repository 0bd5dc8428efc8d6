# amaranth: UnusedElaboratable=no
import pytest

from hw.core import ScalarUnit
from hw.core.scalar_unit import LATENCY, RESULT_LAYOUT
from sim.cocotb_run import run_cocotb
from sw.isa import INSTR_BITS, REG_BITS, SCALAR_OPS, Op
from sw.isa_sim import SCALAR_CYCLES


def test_signature_and_validation():
    u = ScalarUnit()
    assert u.table_depth == 1024 and u.read_ports == 3
    assert len(u.instr.payload) == INSTR_BITS
    assert len(u.read) == 3 and len(u.read[0].data) == REG_BITS and len(u.read[0].addr) == 5
    assert len(u.write.data) == REG_BITS
    assert len(u.tmem_w.addr) == 10 and len(u.tmem_w.data) == 18
    assert RESULT_LAYOUT.size == 2 * 5 + 2 * REG_BITS + 1
    assert len(ScalarUnit(table_depth=640).tmem_w.addr) == 10
    assert not hasattr(ScalarUnit(read_ports=0), "read")
    with pytest.raises(AttributeError):
        u.table_depth = 2
    for bad in (0, -1, 1.5, True, 1 << 20):
        with pytest.raises(ValueError, match="table_depth"):
            ScalarUnit(table_depth=bad)
    for bad in (-1, 9, "3", False):
        with pytest.raises(ValueError, match="read_ports"):
            ScalarUnit(read_ports=bad)


def test_latency_is_the_cycle_model():
    # every scalar opcode but SLDC (the sequencer's: it reads CMEM) at the cycle model's latency
    assert set(LATENCY) == set(SCALAR_OPS) - {Op.SLDC}
    assert {op: SCALAR_CYCLES[op] for op in LATENCY} == LATENCY


def test_scalar_unit_cocotb():
    assert run_cocotb(ScalarUnit(), toplevel="scalar_unit", test_module="sim.tb_scalar_unit") == 8
