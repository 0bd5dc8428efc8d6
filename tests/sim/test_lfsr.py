# amaranth: UnusedElaboratable=no
import pytest
from amaranth.lib import wiring

from hw.lfsr import LFSR, lfsr_sequence
from sim.cocotb_run import CocotbFailure, run_cocotb


def test_signature():
    dut = LFSR(16, seed=0xACE1)
    assert dut.width == 16 and dut.seed == 0xACE1
    assert len(dut.value) == 16 and dut.signature.members["value"].flow == wiring.Out
    with pytest.raises(ValueError, match="width"):
        LFSR(13)
    with pytest.raises(ValueError, match="seed"):
        LFSR(8, seed=0)


def test_model_is_maximal_length():
    seq = lfsr_sequence(8, 1, 256)
    assert len(set(seq[:255])) == 255 and seq[255] == seq[0]


@pytest.mark.parametrize("width,seed", [(8, 1), (16, 0xACE1)])
def test_lfsr_cocotb(width, seed):
    assert run_cocotb(LFSR(width, seed), toplevel=f"lfsr{width}", test_module="sim.tb_lfsr",
                      params={"width": width, "seed": seed}) == 1


def test_wrong_model_is_caught():
    # The harness must report a failing cocotb test as a pytest failure: give the testbench a
    # seed that differs from the design's.
    with pytest.raises(CocotbFailure, match="sequence_matches_model"):
        run_cocotb(LFSR(8, 1), toplevel="lfsr8", test_module="sim.tb_lfsr",
                   params={"width": 8, "seed": 2})
