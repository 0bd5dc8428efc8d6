"""Board descriptions: one place to add a board.

Each :class:`Board` names its amaranth-boards platform, its FPGA, the system clock the PLL makes
from the board oscillator, the link's baud rate and the resources a design may use. The host
runtime reads none of this (it reads the bitstream's manifest over the link); ``build.py`` and the
benchmarks do.
"""

from dataclasses import dataclass

__all__ = ["Board", "BOARDS", "get_board", "UnknownBoard"]


class UnknownBoard(KeyError):
    """The board name is not in :data:`BOARDS`."""

    def __str__(self):
        return self.args[0]


@dataclass(frozen=True)
class Board:
    """A board the project builds for.

    Parameters
    ----------
    name : str
        Name used on the command line (``--board``).
    platform : str
        ``module:Class`` of the amaranth-boards platform.
    device, package, speed : str
        ECP5 part as nextpnr-ecp5 takes it (``--85k``, ``CABGA381``, ``6``).
    clk_in_hz : int
        Board oscillator.
    sys_clk_hz : int
        System clock made by the PLL; the UART divides it to ``baud`` exactly.
    baud : int
        Link line rate.
    soc_clk_hz : int
        System clock of the accelerator SoC (``build.py --design soc``) on this board: the fastest
        clock the PLL makes, that ``baud`` divides, at which its routed build met timing (45 MHz:
        the core of commit 7015077; the current, larger core has not been routed yet: docs/core.md,
        "On the ECP5"). Other designs run at ``sys_clk_hz``.
    lut4, ff, dp16kd, mult18 : int
        Resources of the part (for reports and for sizing memories).
    """

    name: str
    platform: str
    device: str
    package: str
    speed: str
    clk_in_hz: int
    sys_clk_hz: int
    baud: int
    soc_clk_hz: int
    lut4: int
    ff: int
    dp16kd: int
    mult18: int

    def make_platform(self):
        """Instantiate the amaranth-boards platform."""
        import importlib
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)()

    @property
    def nextpnr_device(self) -> str:
        return {"LFE5U-12F": "--12k", "LFE5U-25F": "--25k", "LFE5U-45F": "--45k",
                "LFE5U-85F": "--85k"}[self.device]


def _ulx3s(size: str, lut4: int, dp16kd: int, mult18: int) -> Board:
    return Board(name=f"ulx3s-{size.lower()}", platform=f"amaranth_boards.ulx3s:ULX3S_{size}_Platform",
                 device=f"LFE5U-{size}", package="CABGA381", speed="6", clk_in_hz=25_000_000,
                 sys_clk_hz=75_000_000, baud=3_000_000, soc_clk_hz=45_000_000, lut4=lut4, ff=lut4, dp16kd=dp16kd, mult18=mult18)


# Resource counts from the ECP5 family data sheet (FPGA-DS-02012), per device.
BOARDS = {b.name: b for b in [
    _ulx3s("12F", 12_288, 32, 28),
    _ulx3s("25F", 24_288, 56, 28),
    _ulx3s("45F", 43_848, 108, 72),
    _ulx3s("85F", 83_640, 208, 156),
]}
BOARDS["ulx3s"] = BOARDS["ulx3s-85f"]  # the board the project targets first


def get_board(name: str) -> Board:
    """Look a board up by name; the error lists the known ones."""
    try:
        return BOARDS[name.lower()]
    except KeyError:
        raise UnknownBoard(f"unknown board {name!r}; known boards: {', '.join(sorted(BOARDS))}") from None
