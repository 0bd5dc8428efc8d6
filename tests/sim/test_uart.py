import pytest
from amaranth.hdl import Fragment
from amaranth.lib import wiring

from hw.link.uart import UART, UARTRx, UARTTx, uart_divisor
from sim.cocotb_run import run_cocotb


def test_signature():
    u = UART()
    assert (u.clk_freq, u.baud, u.divisor) == (75_000_000, 3_000_000, 25)
    assert u.signature.members["rx"].flow == wiring.In
    assert u.signature.members["tx"].flow == wiring.Out
    assert u.signature.members["rx_stream"].flow == wiring.Out
    rx, tx = UARTRx(clk_freq=24_000_000), UARTTx(clk_freq=24_000_000)
    assert rx.divisor == tx.divisor == 8
    with pytest.raises(AttributeError):
        u.divisor = 3
    for block in (u, rx, tx):
        Fragment.get(block, None)  # elaborates (an unused elaboratable is a warning, an error here)


def test_divisor_checks():
    assert uart_divisor(75_000_000, 3_000_000) == 25
    assert uart_divisor(25_000_000, 115_200) == 217       # 0.03 % off
    with pytest.raises(ValueError, match="off"):
        uart_divisor(40_000_000, 3_000_000)                # 13.33 -> 13: 2.6 % off
    assert uart_divisor(50_000_000, 3_000_000) == 17      # 1.96 % off: just inside
    with pytest.raises(ValueError, match="at least"):
        uart_divisor(25_000_000, 12_000_000)
    with pytest.raises(ValueError, match="positive"):
        uart_divisor(0, 9600)


def test_uart_cocotb():
    # divisor 8: the board model's setting; every test at bit level on the pins
    assert run_cocotb(UART(clk_freq=8_000_000, baud=1_000_000), toplevel="uart_div8",
                      test_module="sim.tb_uart", params={"divisor": 8}) == 10
