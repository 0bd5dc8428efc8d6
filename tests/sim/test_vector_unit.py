# amaranth: UnusedElaboratable=no
import pytest
from amaranth import signed, unsigned

from hw.core.ports import MemReadSignature, MemWriteSignature, UNIT_CMD_LAYOUT, UnitResultSignature
from hw.core.vector_unit import (CMEM_PORT_REACH, ELEMENT_CYCLES, INTERVAL, OVERHEAD, GROUPED,
                                 VREC_S_LAG, WIDE_ELEMENT_CYCLES, VectorUnit, cycles, path)
from sim.cocotb_run import run_cocotb
from sim.tb_vector_unit import VectorUnitHarness
from sw.isa import VECTOR_OPS, Op
from sw.isa_sim import VECTOR_LATENCY

PARAMS = dict(vmem_depth=4096, cmem_depth=65536, sig_depth=2048, lanes=32, chunks_max=16)


def test_ports_and_validation():
    u = VectorUnit()
    assert (u.vaw, u.caw, u.saw, u.aaw) == (12, 16, 11, 5)
    assert u.signature.members["cmd"].signature.members["payload"].shape == UNIT_CMD_LAYOUT
    assert u.signature.members["result"].signature == UnitResultSignature()
    assert u.signature.members["vmem_rd"].signature == MemReadSignature(12, signed(36))
    assert u.signature.members["vmem_wr"].signature == MemWriteSignature(12, signed(36))
    assert u.signature.members["cmem_rd"].signature == MemReadSignature(16, signed(18))
    for k in ("2", "3", "4", "5", "6", "7", "8"):
        assert u.signature.members[f"cmem_rd{k}"].signature == MemReadSignature(16, signed(18))
    assert u.signature.members["vmem_rd2"].signature == MemReadSignature(12, signed(36))
    assert u.signature.members["sig_rd2"].signature == MemReadSignature(11, unsigned(18))
    assert u.signature.members["sig_rd"].signature == MemReadSignature(11, unsigned(18))
    assert u.signature.members["a_wr"].signature == MemWriteSignature(5, unsigned(256), 32)
    v = VectorUnit(vmem_depth=3000, cmem_depth=2, sig_depth=1025, lanes=8, chunks_max=5)
    assert (v.vaw, v.caw, v.saw, v.aaw, len(v.a_wr.en), len(v.a_wr.data)) == (12, 1, 11, 4, 8, 64)
    for name in PARAMS:
        for bad in (0, -1, 1.5, True, "4"):
            with pytest.raises(ValueError, match=name):
                VectorUnit(**{name: bad})


def test_cycle_table_covers_the_vector_opcodes():
    # every vector opcode of the ISA (the cycle model lists them) has a step sequence
    assert set(ELEMENT_CYCLES) == set(VECTOR_LATENCY) == set(VECTOR_OPS)
    assert set(INTERVAL) == set(ELEMENT_CYCLES) and OVERHEAD == 2
    assert cycles(Op.VSET, 0) == cycles(Op.NOP, 5) == 1
    assert cycles(Op.VNQA, 1) == 2 + ELEMENT_CYCLES[Op.VNQA]
    assert cycles(Op.VNQA, 10) == 2 + 9 * INTERVAL[Op.VNQA] + ELEMENT_CYCLES[Op.VNQA]
    # no path but the wide and the slow one
    with pytest.raises(ValueError, match="path"):
        cycles(Op.VNQA, 10, "fast")
    # the four-lane paths: C[a2] at 0 modulo 4 (each lane's CMEM port reaches banks k and k + 4),
    # C[a0] four words after it modulo 8 (eight CMEM banks), four per cycle
    assert path(Op.VNQA, 8, 0, 4) == path(Op.VUMAX2, 12, 9, 8) == path(Op.VNQA, 0, 0, 4) == "wide"
    assert path(Op.VNQA, 6, 0, 4) == path(Op.VNQA, 2, 0, 4) == "slow"
    assert path(Op.VUMAX2, 3, 9, 7) == path(Op.VNQA, 6, 0, 2) == "slow"          # a0 - a2 = 4, a2 not aligned
    assert path(Op.VNQA, 3, 0, 8) == "slow" and path(Op.VNQA, 2, 0, 8) == "slow"
    assert path(Op.VQ, 2, 0, 0) == path(Op.VQ, 1, 7, 12) == "wide"
    assert path(Op.VQ, 0, 0, 1) == path(Op.VQ, 0, 0, 6) == path(Op.VQ, 0, 0, 11) == "slow"
    assert CMEM_PORT_REACH[0] == tuple(range(8)) and len(CMEM_PORT_REACH) == 8
    for k in range(1, 4):       # lane k of the a2 stream and of the a0 stream
        assert CMEM_PORT_REACH[k] == CMEM_PORT_REACH[4 + k] == (k, k + 4)
    assert path(Op.VGLU, 2, 0, 0) == "slow"
    assert set(WIDE_ELEMENT_CYCLES) == {Op.VNQA, Op.VUMAX2, Op.VQ, Op.VGLU, Op.VREC}
    assert path(Op.VGLU, 0, 1, 3) == path(Op.VGLU, 0, 5, 3) == "wide" and path(Op.VGLU, 0, 1, 2) == "slow"
    assert cycles(Op.VNQA, 12, "wide") == cycles(Op.VNQA, 9, "wide") == 2 + 2 + WIDE_ELEMENT_CYCLES[Op.VNQA]
    assert cycles(Op.VGLU, 10, "wide") == cycles(Op.VGLU, 9, "wide") == 2 + 4 + WIDE_ELEMENT_CYCLES[Op.VGLU]
    # VREC wide: one element per cycle, s (a0) read VREC_S_LAG elements behind f and i, in another bank
    assert path(Op.VREC, 0, 0, 1) == "wide" and path(Op.VREC, VREC_S_LAG + 2, 0, 1) == "wide"
    assert path(Op.VREC, VREC_S_LAG, 0, 1) == path(Op.VREC, VREC_S_LAG + 1, 0, 1) == "slow"
    assert path(Op.VREC, 0, 0, 2) == "slow"
    assert cycles(Op.VREC, 10, "wide") == 2 + 9 + WIDE_ELEMENT_CYCLES[Op.VREC]
    assert cycles(Op.VEMB, 10, "wide") == cycles(Op.VEMB, 10)
    with pytest.raises(ValueError, match="path"):
        cycles(Op.VNQA, 3, True)
    # VQ: four codes per cycle on the wide path (element groups), one on the slow path
    assert cycles(Op.VQ, 12, "wide") == cycles(Op.VQ, 9, "wide") == 2 + 2 + ELEMENT_CYCLES[Op.VQ]
    assert cycles(Op.VQ, 13, "wide") == 2 + 3 + ELEMENT_CYCLES[Op.VQ] and cycles(Op.VQ, 1, "wide") == 2 + ELEMENT_CYCLES[Op.VQ]
    assert cycles(Op.VQ, 13) == 2 + 12 + ELEMENT_CYCLES[Op.VQ] and GROUPED == {Op.VARGMAX: 4}
    with pytest.raises(ValueError, match="multiple of 4"):
        VectorUnit(lanes=5)


def test_intervals_at_the_memory_port_floors():
    # one read port per memory: the interval of each opcode is its most-used port's reads per
    # element (VMEM: VADD 2, VGLU 2, VREC 3; CMEM: VNQA / VUMAX2 2; SIGMEM: 2 per sigmoid, VREC 4)
    floors = {Op.VSET: 1, Op.VEMB: 1, Op.VADD: 2, Op.VMAXABS: 1, Op.VARGMAX: 1,
              Op.VNQA: 2, Op.VUMAX2: 2, Op.VQ: 1, Op.VGLU: 2, Op.VREC: 4}
    assert INTERVAL == floors


def test_vector_unit_small_cocotb():
    """Another geometry: 8 lanes x 4 chunks (VQ lane and word counters), a 1025-word SIGMEM."""
    p = dict(vmem_depth=4096, cmem_depth=16384, sig_depth=1025, lanes=8, chunks_max=4)
    assert run_cocotb(VectorUnitHarness(**p), toplevel="vector_unit_harness", test_module="sim.tb_vector_unit",
                      params=p, testcase="test_nqa_umax_q") == 1


@pytest.mark.parametrize("testcase", ["test_shipped_program", "test_simple_ops", "test_nqa_umax_q", "test_rec_glu"])
def test_vector_unit_cocotb(testcase):
    assert run_cocotb(VectorUnitHarness(**PARAMS), toplevel="vector_unit_harness",
                      test_module="sim.tb_vector_unit", params=PARAMS, testcase=testcase) == 1
