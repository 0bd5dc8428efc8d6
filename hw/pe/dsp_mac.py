"""int8 x int8 multiply-accumulate baseline on the ECP5's MULT18X18D DSP slices.

This is what a generic int8 accelerator would build: one hardware multiplier per lane, the
products summed by a pipelined adder tree into a per-row accumulator. The multiplication is
written as ``x * w`` on two signed 8-bit operands and left to Yosys, which maps every such product
(operands of at most 18 bits) onto one ``MULT18X18D``. The stream interface matches
:class:`hw.pe.adder_tree.TernaryAdderTree`, with int8 weights instead of packed ternary ones, so
the two can be compared like for like.
"""

import math

from amaranth import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DspMac", "dsp_acc_width"]


def dsp_acc_width(k_max: int) -> int:
    """Signed accumulator width for ``k_max`` int8 x int8 products (``|x * w| <= 128 * 128``)."""
    if not isinstance(k_max, int) or isinstance(k_max, bool) or k_max < 1:
        raise ValueError(f"k_max must be a positive integer, not {k_max!r}")
    return (128 * 128 * k_max).bit_length() + 1


def _check_pos_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


class DspMac(wiring.Component):
    """int8 x int8 dot-product lanes on DSP multipliers, ``rows`` rows sharing the activations.

    Every accepted beat carries ``lanes`` int8 activations and ``lanes`` int8 weights per row; the
    ``lanes * rows`` products (one ``MULT18X18D`` each) are registered, summed by a pipelined
    adder tree and accumulated; the beat flagged ``last`` emits one output beat of ``rows`` sums
    and restarts the accumulators. The pipeline advances whenever the output register is empty or
    being read, so back-pressure stalls it without losing or repeating beats.

    Parameters
    ----------
    lanes : int
        Products per row per beat.
    rows : int
        Rows computed in parallel from the same activations.
    k_max : int
        Longest dot product (elements) held exactly; sets :attr:`acc_width`.
    stages : int or None
        Pipeline registers inside the adder tree (after the product register), 0 to
        :attr:`levels`; ``None`` (default): one after every adder level.

    Members
    -------
    i : ``In(stream.Signature(data.StructLayout({"x": data.ArrayLayout(signed(8), lanes), "w": data.ArrayLayout(data.ArrayLayout(signed(8), lanes), rows), "last": 1})))``
        Activations, int8 weights of each row, end-of-dot-product flag.
    o : ``Out(stream.Signature(data.ArrayLayout(signed(acc_width), rows)))``
        One beat of ``rows`` dot products per ``last`` input beat.
    """

    class Signature(wiring.Signature):
        """Signature of :class:`DspMac`; checks the shape parameters."""

        def __init__(self, lanes: int, rows: int, k_max: int):
            _check_pos_int("lanes", lanes)
            _check_pos_int("rows", rows)
            _check_pos_int("k_max", k_max)
            if k_max < lanes:
                raise ValueError(f"k_max ({k_max}) must be at least lanes ({lanes})")
            self._lanes, self._rows, self._k_max = lanes, rows, k_max
            in_layout = data.StructLayout({
                "x": data.ArrayLayout(signed(8), lanes),
                "w": data.ArrayLayout(data.ArrayLayout(signed(8), lanes), rows),
                "last": 1,
            })
            out_layout = data.ArrayLayout(signed(dsp_acc_width(k_max)), rows)
            super().__init__({"i": In(stream.Signature(in_layout)),
                              "o": Out(stream.Signature(out_layout))})

        lanes = property(lambda self: self._lanes)
        rows = property(lambda self: self._rows)
        k_max = property(lambda self: self._k_max)

        def __eq__(self, other):
            return (type(other) is type(self) and
                    (other.lanes, other.rows, other.k_max) == (self.lanes, self.rows, self.k_max))

        def __repr__(self):
            return f"DspMac.Signature(lanes={self._lanes}, rows={self._rows}, k_max={self._k_max})"

    def __init__(self, lanes: int, rows: int = 1, k_max: int = 4096, stages: int | None = None):
        try:
            sig = self.Signature(lanes, rows, k_max)
            levels = math.ceil(math.log2(lanes)) if lanes > 1 else 0
            if stages is None:
                stages = levels
            if not isinstance(stages, int) or isinstance(stages, bool) or \
                    not 0 <= stages <= levels:
                raise ValueError(f"stages must be an integer in 0..{levels} for {lanes} lanes, "
                                 f"not {stages!r}")
        except Exception:
            self._MustUse__silence = True  # a failed construction is not an unused elaboratable
            raise
        self._levels, self._stages = levels, stages
        super().__init__(sig)

    lanes = property(lambda self: self.signature.lanes, doc="Products per row per beat.")
    rows = property(lambda self: self.signature.rows, doc="Rows computed in parallel.")
    k_max = property(lambda self: self.signature.k_max, doc="Longest exact dot product.")
    levels = property(lambda self: self._levels, doc="Adder levels in the tree.")
    stages = property(lambda self: self._stages, doc="Pipeline registers inside the tree.")

    @property
    def acc_width(self) -> int:
        """Width of each signed accumulator and output."""
        return dsp_acc_width(self.k_max)

    @property
    def macs_per_cycle(self) -> int:
        """int8 x int8 products per accepted beat (= MULT18X18D used)."""
        return self.lanes * self.rows

    @property
    def latency(self) -> int:
        """Cycles from accepting a ``last`` beat to its output being valid (no stalls)."""
        return len(self._register_after()) + 2

    def _register_after(self) -> set[int]:
        n, s = self._levels, self._stages
        pos = {min(n, max(1, round((i + 1) * (n + 1) / (s + 1)))) for i in range(s)}
        for p in range(1, n + 1):
            if len(pos) >= s:
                break
            pos.add(p)
        return pos

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self.lanes, self.rows
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        def stage(values, name):
            regs = [Signal(v.shape(), name=f"{name}_{k}") for k, v in enumerate(values)]
            with m.If(en):
                m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
            return regs

        x = self.i.payload.x
        products = []
        for r in range(rows):
            for j in range(lanes):
                p = Signal(signed(16), name=f"r{r}_p{j}")
                m.d.comb += p.eq(x[j] * self.i.payload.w[r][j])
                products.append(p)
        regs = stage([self.i.valid, self.i.payload.last, *products], "prod")
        valid, last = regs[0], regs[1]
        values = [[regs[2 + r * lanes + j] for j in range(lanes)] for r in range(rows)]

        reg_after = self._register_after()
        for level in range(1, self._levels + 1):
            for r in range(rows):
                vals = values[r]
                nxt = []
                for k in range(0, len(vals) - 1, 2):
                    s = Signal(signed(max(len(vals[k]), len(vals[k + 1])) + 1),
                               name=f"r{r}_l{level}_s{k // 2}")
                    m.d.comb += s.eq(vals[k] + vals[k + 1])
                    nxt.append(s)
                if len(vals) % 2:
                    nxt.append(vals[-1])
                values[r] = nxt
            if level in reg_after:
                regs = stage([valid, last] + [v for row in values for v in row], f"l{level}")
                valid, last = regs[0], regs[1]
                pos = 2
                for r in range(rows):
                    values[r] = regs[pos:pos + len(values[r])]
                    pos += len(values[r])

        with m.If(en):
            m.d.sync += self.o.valid.eq(valid & last)
        for r in range(rows):
            acc = Signal(signed(self.acc_width), name=f"acc{r}")
            total = Signal(signed(self.acc_width), name=f"total{r}")
            m.d.comb += total.eq(acc + values[r][0])
            with m.If(en & valid):
                with m.If(last):
                    m.d.sync += [self.o.payload[r].eq(total), acc.eq(0)]
                with m.Else():
                    m.d.sync += acc.eq(total)
        return m
