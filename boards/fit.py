"""How many ECP5 block RAMs (DP16KD) a set of memories needs, before any tool runs.

A DP16KD holds 18 Kbit as 16384 x 1, 8192 x 2, 4096 x 4, 2048 x 9, 1024 x 18 or 512 x 36 (simple
dual port; ECP5 family data sheet, FPGA-DS-02012). A memory of ``depth`` x ``width`` takes the
cheapest tiling by one of these shapes. A memory of at most ``SHALLOW`` words or ``SMALL_BITS``
bits is counted as LUT RAM (where Yosys puts such memories), so the sum estimates what the large
memories alone need: the SoC's estimate is 180 against 184 DP16KD used by its routed build.
:func:`check_fit` uses it to refuse, before synthesis, a design that cannot fit the part.
"""

import re

__all__ = ["DP16KD_SHAPES", "dp16kd_count", "column_width", "check_fit", "DoesNotFit"]

DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))

#: Memories of at most this many bits or words are left to LUT RAM by the estimate.
SMALL_BITS = 2048
SHALLOW = 64


class DoesNotFit(ValueError):
    """The design's memories need more block RAM than the part has."""


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def dp16kd_count(depth: int, width: int) -> int:
    """DP16KDs for one ``depth`` x ``width`` memory (0 for a LUT-RAM-sized one)."""
    if depth < 1 or width < 1:
        raise ValueError(f"memory shape must be positive, not {depth} x {width}")
    if depth * width <= SMALL_BITS or depth <= SHALLOW:
        return 0
    return min(_ceil(depth, d) * _ceil(width, w) for d, w in DP16KD_SHAPES)


def column_width(depth: int) -> int | None:
    """The widest DP16KD shape that holds ``depth`` words in one block RAM (None beyond 16384): a
    wide memory built as columns of this width needs no output multiplexer, each block RAM's data
    pins being the columns' bits."""
    if depth < 1:
        raise ValueError(f"depth must be positive, not {depth}")
    fits = [w for d, w in DP16KD_SHAPES if d >= depth]
    return max(fits) if fits else None


def check_fit(memories, available: int, part: str) -> int:
    """Sum :func:`dp16kd_count` over ``memories`` (``(name, depth, width)``); raise
    :class:`DoesNotFit` naming the largest memories when it exceeds ``available``."""
    counts = [(dp16kd_count(d, w), name) for name, d, w in memories]
    total = sum(c for c, _ in counts)
    if total > available:
        per = {}        # a memory's banks or columns (name0, name1, ...) counted as one memory
        for c, name in counts:
            key = re.sub(r"\d+$", "", name) or name
            per[key] = per.get(key, 0) + c
        big = ", ".join(f"{name} {c}" for name, c in sorted(per.items(), key=lambda x: (-x[1], x[0]))[:3])
        raise DoesNotFit(f"the design's memories need {total} DP16KD block RAMs and the {part} has "
                         f"{available} (largest: {big}); use a larger part (ulx3s-85f) or smaller memories")
    return total
