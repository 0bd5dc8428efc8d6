"""LUT-based mixed-precision GEMV unit (T-MAC / LUT Tensor Core / bitnet.cpp TL2 on an ECP5).

Instead of multiplying (or muxing and adding) each int8 activation by its weight, the unit
precomputes, for every group of ``g`` activations, a small table of all the partial sums the
group's weights can select, and each output lane then adds one table entry per group. One table
serves ``lanes`` output lanes at once and ``rows`` row tiles one after the other (an elongated
tile: few tables, many weight rows), so its cost is shared by ``lanes * rows`` dot products.

The table arithmetic is defined in :mod:`sw.lut_model` (the golden model); this module is its
gateware. See docs/lut_gemm.md for the structure, cycle counts and measured cost.

Dataflow
--------
A GEMV ``y = W x`` with ``N = rows * lanes`` output rows and ``K = blocks * tables * group``
columns (pad with zero weights and zero activations) runs as ``blocks`` column blocks:

1. ``act`` delivers the ``tables * group`` activations of a block (``last`` marks the final
   block of the GEMV). The table writer computes the block's ``tables`` tables one entry per
   cycle and writes each entry, broadcast, into the table memories of every lane. There are two
   banks: the writer fills one while the lanes read the other.
2. ``weights`` then delivers ``rows`` beats for that block, row tile ``r`` = 0 .. rows-1: lane
   ``p`` gets the codes of output row ``r * lanes + p``. Each lane looks up one entry per group
   (per bit plane), negates it on the sign bit as ``(e XOR s) + s`` with the ``+ s`` riding as
   the carry-in of an adder, sums them and adds the sum to its accumulator for row ``r`` (a small
   per-lane memory of ``rows + 1`` words; the extra word stays zero and is read instead of the
   accumulator during the first block, so starting a new GEMV costs no per-lane logic).
3. During the last block, each weight beat produces one ``result`` beat: the ``lanes`` finished
   dot products of row tile ``r``.

Tables live in distributed RAM (LUTRAM: 16 x 4-bit TRELLIS_DPR16X4 on the ECP5) with one read
port per lane and group (and bit plane); every lane has its own copy, written in parallel.

The lane pipeline has three registered stages, A1 (lookup and sign), A2 (lane adder tree) and B
(accumulate, result register); it advances while the result register is empty or being read.
A block takes ``max(rows, table_entries + 1)`` cycles in the steady state.
"""

import math

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sw import lut_model as lm

__all__ = ["LutGemv", "BENCH_SIZES"]


def _check_pos_int(name, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


def _code_bits(weight_format: str) -> int:
    return 5 if weight_format == "tl2" else lm.weight_bits(weight_format)


def _add_cin(m, a, b, cin, bound, name):
    """``a + b + cin`` (``cin`` one bit) as one carry chain: ``({a, 1} + {b, cin}) >> 1``."""
    width = lm.signed_width(bound)
    ax = Signal(signed(width), name=f"{name}_a")
    bx = Signal(signed(width), name=f"{name}_b")
    s = Signal(signed(width + 1), name=f"{name}_s")
    out = Signal(signed(width), name=name)
    m.d.comb += [ax.eq(a), bx.eq(b),
                 s.eq(Cat(Const(1, 1), ax).as_signed() + Cat(cin, bx).as_signed()),
                 out.eq(s[1:])]
    return out


class LutGemv(wiring.Component):
    """Table-lookup GEMV: int8 activations times ternary (TL2) or k-bit (bit-plane) weights.

    Parameters
    ----------
    weight_format : str
        ``"tl2"`` (ternary, 3 weights per 5-bit code) or ``"int2"``, ``"int3"``, ``"int4"``
        (k-bit signed weights, bit planes); see :mod:`sw.lut_model`.
    group : int
        Activations per table, ``g``: 3 for TL2, 2, 3 or 4 for bit planes.
    lanes : int
        Output lanes sharing every table (``P``).
    tables : int
        Tables (groups of activations) per block, ``G``: each beat a lane adds ``G`` lookups
        (``G * k`` for k-bit weights).
    rows : int
        Row tiles per block (``R``): the tables of a block are reused for ``R`` weight beats.
        With ``rows >= table_entries + 1`` the table writer hides behind the lanes and the unit
        takes one weight beat per cycle. ``rows = 15`` fills a 16-word LUTRAM accumulator.
    k_max : int
        Longest dot product (K) the accumulators hold exactly, for activations in [-127, 127].
    symmetric : bool
        Bit planes only: store half tables (``T[p] = -T[~p]``) and negate on the sign bit
        (True), or store the full ``2**g``-entry table and read it directly (False). TL2 is
        always symmetric.

    Members
    -------
    act : ``In(stream.Signature(data.StructLayout({"x": data.ArrayLayout(signed(8), tables * group), "last": 1})))``
        The activations of one column block; ``last`` marks the final block of a GEMV.
    weights : ``In(stream.Signature(data.ArrayLayout(data.ArrayLayout(unsigned(code_bits), codes_per_lane), lanes)))``
        One row tile of one block: per lane, ``tables`` TL2 codes (``code_bits`` = 5), or
        ``tables * group`` values ``q = w + 2**(k-1)`` (``code_bits`` = k), group-major.
    result : ``Out(stream.Signature(data.ArrayLayout(signed(result_width), lanes)))``
        During the last block, one beat per row tile: the dot products of rows
        ``r * lanes + p``.
    """

    class Signature(wiring.Signature):
        """Signature of :class:`LutGemv`; checks the parameters that shape its ports."""

        def __init__(self, weight_format: str, group: int, lanes: int, tables: int, k_max: int):
            if weight_format not in lm.WEIGHT_FORMATS:
                raise ValueError(f"weight_format must be one of {sorted(lm.WEIGHT_FORMATS)}, "
                                 f"not {weight_format!r}")
            if not isinstance(group, int) or isinstance(group, bool):
                raise ValueError(f"group must be an integer, not {group!r}")
            lm.check_format(weight_format, group)
            _check_pos_int("lanes", lanes)
            _check_pos_int("tables", tables)
            _check_pos_int("k_max", k_max)
            self._weight_format, self._group = weight_format, group
            self._lanes, self._tables, self._k_max = lanes, tables, k_max
            per_lane = tables if weight_format == "tl2" else tables * group
            act = data.StructLayout({"x": data.ArrayLayout(signed(8), tables * group), "last": 1})
            wts = data.ArrayLayout(
                data.ArrayLayout(unsigned(_code_bits(weight_format)), per_lane), lanes)
            res = data.ArrayLayout(signed(self.result_width), lanes)
            super().__init__({"act": In(stream.Signature(act)),
                              "weights": In(stream.Signature(wts)),
                              "result": Out(stream.Signature(res))})

        weight_format = property(lambda self: self._weight_format)
        group = property(lambda self: self._group)
        lanes = property(lambda self: self._lanes)
        tables = property(lambda self: self._tables)
        k_max = property(lambda self: self._k_max)

        @property
        def result_width(self) -> int:
            return lm.signed_width(lm.result_bound(self._weight_format, self._k_max))

        def __eq__(self, other):
            key = lambda s: (s.weight_format, s.group, s.lanes, s.tables, s.k_max)
            return type(other) is type(self) and key(other) == key(self)

        def __repr__(self):
            return (f"LutGemv.Signature({self._weight_format!r}, group={self._group}, "
                    f"lanes={self._lanes}, tables={self._tables}, k_max={self._k_max})")

    def __init__(self, *, weight_format: str = "tl2", group: int = 3, lanes: int = 16,
                 tables: int = 4, rows: int = 15, k_max: int = 4096, symmetric: bool = True):
        sig = self.Signature(weight_format, group, lanes, tables, k_max)
        _check_pos_int("rows", rows)
        if not isinstance(symmetric, bool):
            raise TypeError(f"symmetric must be a bool, not {symmetric!r}")
        lm.check_format(weight_format, group, symmetric)
        self._rows, self._symmetric = rows, symmetric
        super().__init__(sig)

    weight_format = property(lambda self: self.signature.weight_format,
                             doc="``'tl2'``, ``'int2'``, ``'int3'`` or ``'int4'``.")
    group = property(lambda self: self.signature.group, doc="Activations per table (g).")
    lanes = property(lambda self: self.signature.lanes, doc="Output lanes per table (P).")
    tables = property(lambda self: self.signature.tables, doc="Tables per block (G).")
    k_max = property(lambda self: self.signature.k_max, doc="Longest exact dot product.")
    rows = property(lambda self: self._rows, doc="Row tiles per block (R).")
    symmetric = property(lambda self: self._symmetric, doc="Half tables with a sign bit.")
    result_width = property(lambda self: self.signature.result_width,
                            doc="Width of one dot product on ``result``.")

    @property
    def weight_bits(self) -> int | None:
        """k for bit-plane formats, ``None`` for TL2."""
        return lm.WEIGHT_FORMATS[self.weight_format]

    @property
    def table_entries(self) -> int:
        """Entries written per table (14 for TL2, ``2**(g-1)`` half, ``2**g`` full)."""
        return lm.table_entries(self.weight_format, self.group, self.symmetric)

    @property
    def entry_width(self) -> int:
        """Width of a table entry (exact, full precision)."""
        return lm.entry_width(self.weight_format, self.group)

    @property
    def acc_width(self) -> int:
        """Width of a lane accumulator."""
        return lm.signed_width(lm.acc_bound(self.weight_format, self.k_max))

    @property
    def cycles_per_block(self) -> int:
        """Steady-state cycles per column block: ``max(rows, table_entries + 1)``."""
        return max(self.rows, self.table_entries + 1)

    @property
    def weights_per_cycle(self) -> int:
        """Weights consumed per accepted weight beat: ``lanes * tables * group``."""
        return self.lanes * self.tables * self.group

    @property
    def macs_per_cycle(self) -> float:
        """Sustained int8 x weight multiply-accumulates per cycle (steady state, no stalls)."""
        return self.weights_per_cycle * self.rows / self.cycles_per_block

    def elaborate(self, platform):
        m = Module()
        fmt, g, P, G, R = self.weight_format, self.group, self.lanes, self.tables, self.rows
        tl2, sym = fmt == "tl2", self.symmetric
        k = 1 if tl2 else self.weight_bits
        E = self.table_entries
        ib = max(1, math.ceil(math.log2(E)))           # index bits of one bank
        ew = self.entry_width
        ebound = lm.entry_bound(fmt, g)
        digits = lm.table_digits(fmt, g, sym)

        # ---- table writer: one entry of every table per cycle, into bank `wp` --------------------
        xreg = Signal(data.ArrayLayout(signed(8), G * g))
        xneg = Signal(data.ArrayLayout(signed(9), G * g))   # -x, negated on the way in
        wbusy = Signal()
        wcnt = Signal(range(E))
        wp = Signal()                                  # bank being filled next
        full = Signal(2)                               # bank holds a complete block
        bank_first = Signal(2)
        bank_last = Signal(2)
        wfirst = Signal()
        wlast = Signal()
        next_first = Signal(init=1)

        # The activations are taken as soon as the previous table is written; the entries are
        # computed and written once bank `wp` is free (`go`).
        go = Signal()
        m.d.comb += [self.act.ready.eq(~wbusy), go.eq(wbusy & ~full.bit_select(wp, 1))]
        with m.If(self.act.valid & self.act.ready):
            m.d.sync += [xneg[i].eq(-self.act.payload.x[i]) for i in range(G * g)]
            m.d.sync += [xreg.eq(self.act.payload.x), wlast.eq(self.act.payload.last),
                         wfirst.eq(next_first), next_first.eq(self.act.payload.last),
                         wbusy.eq(1), wcnt.eq(0)]

        # Coefficients of entry `wcnt`, shared by all tables: +1, -1 or 0 per activation.
        pos = Signal(g)
        neg = Signal(g)
        with m.Switch(wcnt):
            for e in range(E):
                with m.Case(e):
                    m.d.comb += [pos.eq(sum(1 << j for j in range(g) if digits[e, j] > 0)),
                                 neg.eq(sum(1 << j for j in range(g) if digits[e, j] < 0))]
        entries = []
        for t in range(G):
            terms = []
            for j in range(g):
                xj = xreg[t * g + j]
                term = Signal(signed(9), name=f"wr_t{t}_x{j}")
                m.d.comb += term.eq(Mux(pos[j], xj, Mux(neg[j], xneg[t * g + j], 0)))
                terms.append(term)
            entry = Signal(signed(ew), name=f"wr_entry{t}")
            m.d.comb += entry.eq(sum(terms))
            entries.append(entry)

        # -sum(x) of the block is the sum of the entries 0 (every sign negative); bit planes only.
        ybound = lm.X_MAX * self.k_max
        ycap = Signal(signed(lm.signed_width(G * g * lm.X_MAX)))
        bank_y = [Signal(signed(lm.signed_width(G * g * lm.X_MAX)), name=f"bank_y{b}")
                  for b in range(2)]
        if not tl2:
            with m.If(go & (wcnt == 0)):
                m.d.sync += ycap.eq(sum(entries))

        # The entries are registered before the write (the writer's adders are off the RAM path);
        # the bank is marked full once its last entry has landed.
        entry_d = [Signal(signed(ew), name=f"wr_entry{t}_d") for t in range(G)]
        waddr_d = Signal(ib + 1)
        we_d = Signal()
        done_d = Signal()
        m.d.sync += [we_d.eq(go), waddr_d.eq(Cat(wcnt[:ib], wp)), done_d.eq(0)]
        m.d.sync += [d.eq(e) for d, e in zip(entry_d, entries)]
        with m.If(go):
            with m.If(wcnt == E - 1):
                m.d.sync += [wbusy.eq(0), wp.eq(~wp), done_d.eq(1)]
                with m.Switch(wp):
                    for b in range(2):
                        with m.Case(b):
                            m.d.sync += [bank_first[b].eq(wfirst), bank_last[b].eq(wlast)]
                            if not tl2:
                                m.d.sync += bank_y[b].eq(ycap)
            with m.Else():
                m.d.sync += wcnt.eq(wcnt + 1)
        with m.If(done_d):
            with m.Switch(waddr_d[ib]):
                for b in range(2):
                    with m.Case(b):
                        m.d.sync += full[b].eq(1)

        # ---- lanes, stage A: lookups and the per-lane sum of one beat ---------------------------
        rp = Signal()                                  # bank being read
        rcnt = Signal(range(max(R, 2)))
        advance = Signal()
        accept = Signal()
        m.d.comb += [advance.eq(~self.result.valid | self.result.ready),
                     self.weights.ready.eq(full.bit_select(rp, 1) & advance),
                     accept.eq(self.weights.valid & self.weights.ready)]

        avalid = Signal()
        afirst = Signal()
        alast = Signal()
        arow = Signal(range(R + 1))
        ay = Signal.like(bank_y[0])
        bvalid = Signal()
        bfirst = Signal()
        blast = Signal()
        brow = Signal(range(R + 1))
        y_run = Signal(signed(lm.signed_width(ybound)))

        lane_sum, lane_cin = [], []
        for p in range(P):
            codes = self.weights.payload[p]
            planes = []                                # per bit plane: list of (value, carry, bound)
            for i in range(k):
                leaves = []
                for t in range(G):
                    mem = Memory(shape=signed(ew), depth=2 << ib, init=[])
                    m.submodules[f"table_l{p}_g{t}_b{i}"] = mem
                    wr = mem.write_port()
                    m.d.comb += [wr.addr.eq(waddr_d), wr.data.eq(entry_d[t]), wr.en.eq(we_d)]
                    rd = mem.read_port(domain="comb")
                    if tl2:
                        code = codes[t]
                        s, idx = code[4], code[:4]
                    else:
                        idx_full = Cat(*(codes[t * g + j][i] for j in range(g)))
                        if sym:
                            s = idx_full[g - 1]
                            idx = idx_full[:g - 1] ^ s.replicate(g - 1)
                        else:
                            s, idx = Const(0, 1), idx_full
                    m.d.comb += rd.addr.eq(Cat(idx[:ib], rp))
                    # Lookups are registered (stage A1) before the adder tree (stage A2).
                    leaf = Signal(signed(ew), name=f"leaf_l{p}_g{t}_b{i}")
                    leaf_s = Signal(name=f"leaf_l{p}_g{t}_b{i}_s")
                    with m.If(advance):
                        if tl2 or sym:
                            m.d.sync += [leaf.eq((rd.data.as_unsigned()
                                                  ^ s.replicate(ew)).as_signed()),
                                         leaf_s.eq(s)]
                        else:
                            m.d.sync += leaf.eq(rd.data)
                    leaves.append((leaf, leaf_s, ebound + 1))
                # Pairwise tree; each adder takes one pending carry as its carry-in.
                n = 0
                while len(leaves) > 1:
                    nxt = []
                    for a, b in zip(leaves[0::2], leaves[1::2]):
                        v = _add_cin(m, a[0], b[0], a[1], a[2] + b[2] + 1, f"add_l{p}_b{i}_{n}")
                        n += 1
                        nxt.append((v, b[1], a[2] + b[2] + 1))
                    if len(leaves) % 2:
                        nxt.append(leaves[-1])
                    leaves = nxt
                planes.append(leaves[0])
            # Planes, most significant first (Horner): R = 2 (R + c) + S_i + c_i, where the pending
            # carry c of the upper planes enters twice, once as the free low bit of 2 R and once as
            # the carry-in; the last pending carry goes to the accumulator adder.
            acc_v, acc_c, acc_b = planes[-1]
            for i in range(k - 2, -1, -1):
                v, c, b = planes[i]
                hb = 2 * (acc_b + 1) + b + 1
                acc_v = _add_cin(m, Cat(acc_c, acc_v).as_signed(), v, acc_c, hb, f"plane_l{p}_{i}")
                acc_b, acc_c = hb, c
            sreg = Signal(signed(lm.signed_width(acc_b)), name=f"sum_l{p}")
            creg = Signal(name=f"cin_l{p}")
            with m.If(advance):
                m.d.sync += [sreg.eq(acc_v), creg.eq(acc_c)]
            lane_sum.append(sreg)
            lane_cin.append(creg)

        with m.If(advance):
            m.d.sync += [avalid.eq(accept), afirst.eq(bank_first.bit_select(rp, 1)),
                         alast.eq(bank_last.bit_select(rp, 1)), arow.eq(rcnt),
                         ay.eq(Mux(rp, bank_y[1], bank_y[0]))]
            m.d.sync += [bvalid.eq(avalid), bfirst.eq(afirst), blast.eq(alast), brow.eq(arow)]
            if not tl2:
                # Running -sum(x) of the GEMV, updated as row 0 of a block enters stage B.
                with m.If(avalid & (arow == 0)):
                    m.d.sync += y_run.eq(Mux(afirst, 0, y_run) + ay)
        with m.If(accept):
            with m.If(rcnt == R - 1):
                m.d.sync += [rcnt.eq(0), rp.eq(~rp)]
                with m.Switch(rp):
                    for b in range(2):
                        with m.Case(b):
                            m.d.sync += full[b].eq(0)
            with m.Else():
                m.d.sync += rcnt.eq(rcnt + 1)

        # ---- lanes, stage B: accumulate; the last block emits the results -----------------------
        acc_bound = lm.acc_bound(fmt, self.k_max)
        acc_raddr = Signal(range(R + 1))                # registered: it fans out to every lane
        with m.If(advance):
            m.d.sync += acc_raddr.eq(Mux(afirst, R, arow))
        results = []
        for p in range(P):
            # Word R is never written and stays zero: the first block of a GEMV reads it instead
            # of the row's accumulator (one shared address mux instead of a mux per lane bit).
            accmem = Memory(shape=signed(self.acc_width), depth=R + 1, init=[0] * (R + 1))
            m.submodules[f"acc_l{p}"] = accmem
            ard = accmem.read_port(domain="comb")
            awr = accmem.write_port()
            m.d.comb += ard.addr.eq(acc_raddr)
            acc_new = _add_cin(m, ard.data, lane_sum[p], lane_cin[p], acc_bound, f"acc_new_l{p}")
            m.d.comb += [awr.addr.eq(brow), awr.data.eq(acc_new), awr.en.eq(bvalid & advance)]
            if tl2:
                results.append(acc_new)
            else:
                twice = Signal(signed(lm.signed_width(2 * lm.result_bound(fmt, self.k_max))),
                               name=f"twice_l{p}")
                m.d.comb += twice.eq(acc_new + y_run)
                results.append(twice[1:].as_signed())

        with m.If(advance):
            m.d.sync += self.result.valid.eq(bvalid & blast)
            for p in range(P):
                m.d.sync += self.result.payload[p].eq(results[p])
        return m


#: Constructor arguments of the sizes that bench/pe_sweep.py builds standalone (docs/lut_gemm.md):
#: TL2 at 192, 384 and 768 int8 x ternary MACs per cycle, and 2-bit bit planes (g = 3, full
#: tables, the best bit-plane choice measured) at 384.
BENCH_SIZES = [
    dict(weight_format="tl2", group=3, lanes=16, tables=4, rows=15, k_max=4096),
    dict(weight_format="tl2", group=3, lanes=16, tables=8, rows=15, k_max=4096),
    dict(weight_format="tl2", group=3, lanes=16, tables=16, rows=15, k_max=4096),
    dict(weight_format="int2", group=3, lanes=16, tables=8, rows=15, k_max=4096, symmetric=False),
]
