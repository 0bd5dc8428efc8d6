"""Ternary adder-tree processing element: int8 activations times ternary weights, no multipliers.

A ternary weight either passes an activation, negates it, or drops it, so a dot product needs only
a mux per bit and an adder tree. Negation is two's complement split in two halves: the leaf passes
``~x`` (which still fits in 8 bits) and the ``+1`` rides as the carry-in of an adder further up the
tree (``{a, 1} + {b, c}`` shifted right by one adds ``a + b + c`` in one carry chain), so a lane
costs one LUT4 per activation bit plus its share of the tree.

Weights arrive in the host packing formats of :mod:`sw.packing`: ``"2bit"`` codes go straight to the
lanes, ``"trits5"`` bytes (five weights per byte) pass through a decoder first, its own component
so that its cost can be measured separately: :class:`Trits5Decoder` computes the trits with a
chain of adders in LUT4s, :class:`Trits5RomDecoder` looks them up in a block-RAM table. The
decoders implement :func:`sw.packing.trits5_decode_byte`, the same rule the host packer is
tested against.

Measured costs on the ECP5 are in ``docs/pe_comparison.md`` (``bench/pe_sweep.py``).
"""

import math

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from sw.packing import trits5_decode_byte

__all__ = ["TernaryAdderTree", "Trits5Decoder", "Trits5RomDecoder", "WEIGHT_FORMATS", "DECODERS",
           "acc_width", "row_weight_bits"]

#: Weight formats the PE accepts, as named in :mod:`sw.packing`.
WEIGHT_FORMATS = ("2bit", "trits5")

#: Implementations of the trits5 decoder: adders in LUT4 logic, or a block-RAM table.
DECODERS = ("logic", "rom")


def acc_width(k_max: int) -> int:
    """Signed accumulator width that holds any sum of ``k_max`` int8 x ternary products.

    The bound used is ``|acc| <= 128 * k_max`` (an activation of -128 negated gives +128), one
    step above the ``127 * K`` of symmetric int8; for K = 5632 both need 21 bits.
    """
    if not isinstance(k_max, int) or k_max < 1:
        raise ValueError(f"k_max must be a positive integer, not {k_max!r}")
    return (128 * k_max).bit_length() + 1


def row_weight_bits(lanes: int, weight_format: str) -> int:
    """Bits of one row of ``lanes`` packed weights on the input port."""
    if weight_format == "2bit":
        return 2 * lanes
    if weight_format == "trits5":
        return 8 * -(-lanes // 5)
    raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, not {weight_format!r}")


def _check_pos_int(name, value, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")


class Trits5Decoder(wiring.Component):
    """Decoder from 5-trits-per-byte packing to 2-bit weight codes, in adders (no table).

    Each byte holds five trits (see :func:`sw.packing.pack_trits5`); trit ``n`` of a byte is
    ``(((byte * 3**n) mod 256) * 3) >> 8``. The decoder evaluates that as a chain: with
    ``s_0 = byte``, ``p = 3 * s_n`` (10 bits, one adder), ``t_n = p[8:10]`` and ``s_{n+1} = p[0:8]``.
    No table, no multiplier. The chain is five adders deep; ``stages`` registers split it.

    Parameters
    ----------
    count : int
        Number of weights decoded; ``ceil(count / 5)`` bytes are read, trailing trits of the last
        byte beyond ``count`` are dropped.
    stages : int
        Pipeline registers inside the chain: 0 (combinational), 1 (after the third adder) or 2
        (after the second and the fourth).

    Members
    -------
    packed : ``In(8 * ceil(count / 5))``
        Packed bytes, byte 0 in bits 7:0.
    en : ``In(1, init=1)``
        Only with ``stages > 0``: the pipeline registers load on clock edges where it is high.
    codes : ``Out(2 * count)``
        2-bit codes ``w + 1`` (the ``"2bit"`` format), weight 0 in bits 1:0; ``stages`` cycles
        (enabled edges) after ``packed``.
    """

    _SPLITS = {0: (), 1: (2,), 2: (1, 3)}  # register after these adder steps

    class Signature(wiring.Signature):
        """Signature of :class:`Trits5Decoder`; checks ``count`` and ``stages``."""

        def __init__(self, count: int, stages: int = 0):
            _check_pos_int("count", count)
            if stages not in Trits5Decoder._SPLITS or isinstance(stages, bool):
                raise ValueError(f"stages must be 0, 1 or 2, not {stages!r}")
            self._count, self._stages = count, stages
            members = {"packed": In(row_weight_bits(count, "trits5")), "codes": Out(2 * count)}
            if stages:
                members["en"] = In(1, init=1)
            super().__init__(members)

        count = property(lambda self: self._count)
        stages = property(lambda self: self._stages)

        def __eq__(self, other):
            return type(other) is type(self) and (other.count, other.stages) == \
                (self.count, self.stages)

        def __repr__(self):
            return f"Trits5Decoder.Signature({self._count}, stages={self._stages})"

    def __init__(self, count: int, stages: int = 0):
        try:
            sig = self.Signature(count, stages)
        except Exception:
            self._MustUse__silence = True  # a failed construction is not an unused elaboratable
            raise
        super().__init__(sig)

    count = property(lambda self: self.signature.count, doc="Weights decoded.")
    stages = property(lambda self: self.signature.stages, doc="Registers inside the chain.")
    latency = property(lambda self: self.signature.stages, doc="Cycles from packed to codes.")

    def elaborate(self, platform):
        m = Module()
        codes = []
        splits = self._SPLITS[self.stages]
        for b in range(-(-self.count // 5)):
            s = self.packed[8 * b:8 * b + 8]
            byte_codes = []
            for n in range(5):
                p = Signal(10, name=f"b{b}_p{n}")
                m.d.comb += p.eq(s + (s << 1))
                byte_codes.append(p[8:10])
                s = p[0:8]
                if n in splits:
                    s_reg = Signal(8, name=f"b{b}_s{n + 1}", reset_less=True)
                    c_reg = Signal(2 * (n + 1), name=f"b{b}_t{n}", reset_less=True)
                    with m.If(self.en):
                        m.d.sync += [s_reg.eq(s), c_reg.eq(Cat(*byte_codes))]
                    s = s_reg
                    byte_codes = [c_reg]
            codes += byte_codes
        m.d.comb += self.codes.eq(Cat(*codes)[:2 * self.count])
        return m


class Trits5RomDecoder(wiring.Component):
    """Registered decoder from 5-trits-per-byte packing to 2-bit codes, by block-RAM table.

    The 256-entry table (10 bits: five 2-bit codes) holds, for every byte, what
    :func:`sw.packing.trits5_decode_byte` reads from it; each byte gets one read port and two
    read ports share one table, so Yosys maps every pair of bytes to one ``DP16KD`` and the
    decoder costs no LUT4. The read is synchronous: ``codes`` follow ``packed`` by one clock
    edge at which ``en`` was high.

    Parameters
    ----------
    count : int
        Number of weights decoded (as for :class:`Trits5Decoder`).

    Members
    -------
    packed : ``In(8 * ceil(count / 5))``
        Packed bytes, byte 0 in bits 7:0.
    en : ``In(1, init=1)``
        Read enable: the output register loads on clock edges where ``en`` is high.
    codes : ``Out(2 * count)``
        2-bit codes ``w + 1``, registered.
    """

    class Signature(wiring.Signature):
        """Signature of :class:`Trits5RomDecoder`; checks ``count``."""

        def __init__(self, count: int):
            _check_pos_int("count", count)
            self._count = count
            super().__init__({"packed": In(row_weight_bits(count, "trits5")),
                              "en": In(1, init=1),
                              "codes": Out(2 * count)})

        @property
        def count(self) -> int:
            return self._count

        def __eq__(self, other):
            return type(other) is type(self) and other.count == self.count

        def __repr__(self):
            return f"Trits5RomDecoder.Signature({self._count})"

    def __init__(self, count: int):
        try:
            sig = self.Signature(count)
        except Exception:
            self._MustUse__silence = True  # a failed construction is not an unused elaboratable
            raise
        super().__init__(sig)

    @property
    def count(self) -> int:
        return self.signature.count

    @property
    def tables(self) -> int:
        """Table copies (block RAMs): one per two bytes."""
        return -(-(-(-self.count // 5)) // 2)

    @staticmethod
    def table() -> list[int]:
        """The 256 table entries: code of trit n in bits 2n+1:2n."""
        return [sum(t << (2 * n) for n, t in enumerate(trits5_decode_byte(b))) for b in range(256)]

    def elaborate(self, platform):
        m = Module()
        nbytes = -(-self.count // 5)
        init = self.table()
        codes = []
        for k in range(self.tables):
            rom = memory.Memory(shape=10, depth=256, init=init,
                                attrs={"rom_style": "block", "ram_style": "block"})
            m.submodules[f"rom{k}"] = rom
            for b in range(2 * k, min(2 * k + 2, nbytes)):
                port = rom.read_port(domain="sync")
                m.d.comb += [port.addr.eq(self.packed[8 * b:8 * b + 8]), port.en.eq(self.en)]
                codes.append(port.data)
        m.d.comb += self.codes.eq(Cat(*codes)[:2 * self.count])
        return m


class TernaryAdderTree(wiring.Component):
    """Pipelined ternary dot-product engine: ``lanes`` products per row per beat, ``rows`` rows.

    Every accepted input beat carries ``lanes`` int8 activations, shared by all rows, and one packed
    weight vector per row. The products of a beat are summed by a pipelined adder tree and added to
    a per-row accumulator; the beat flagged ``last`` closes the dot product and emits one output beat
    with the ``rows`` sums, after which the accumulators restart from zero. A dot product of ``K``
    elements takes ``ceil(K / lanes)`` beats (pad with zero weights) and is exact for ``K <= k_max``.

    The pipeline advances whenever the output register is empty or being read, so a stalled output
    holds every beat in flight (none lost or duplicated) and back-pressures the input.

    Parameters
    ----------
    lanes : int
        Activations (and weights per row) per beat.
    rows : int
        Output rows computed in parallel from the same activations.
    k_max : int
        Longest dot product (in elements) the accumulators hold exactly; sets :attr:`acc_width`.
    weight_format : str
        ``"2bit"`` or ``"trits5"`` (:mod:`sw.packing`).
    stages : int or None
        Pipeline registers inside the adder tree, 0 to :attr:`levels`; ``None`` (default): one
        after every adder level. On the ECP5 the flip-flops share slices with the adders, so the
        full pipeline costs no LUT4s (64 lanes: 1,599 LUT4 at 151 MHz with 3 registers, at 209 MHz
        with 6, measured by ``bench/pe_sweep.py``).
    decode_stage : bool
        For ``"trits5"`` with the ``"logic"`` decoder: register the decoded codes before the tree
        (one more cycle of latency). The ``"rom"`` decoder is always registered.
    decoder : str
        For ``"trits5"``: ``"logic"`` (:class:`Trits5Decoder`, adders in LUT4s) or ``"rom"``
        (:class:`Trits5RomDecoder`, one ``DP16KD`` per two bytes per row, no LUT4s; its output
        is registered once more in the fabric, so it adds two cycles of latency).
    decoder_stages : int
        For the ``"logic"`` decoder: registers inside its five-adder chain (0, 1 or 2), before
        the ``decode_stage`` register. Default 2: at 64 lanes the PE then runs at 190 MHz
        against 143 MHz with 1 and 97 MHz with 0, for the same LUT4 count (measured by
        ``bench/pe_sweep.py``).

    Members
    -------
    i : ``In(stream.Signature(data.StructLayout({"x": data.ArrayLayout(signed(8), lanes), "w": data.ArrayLayout(unsigned(row_bits), rows), "last": 1})))``
        Activations, packed weights of each row (``row_bits`` = :func:`row_weight_bits`) and the
        end-of-dot-product flag.
    o : ``Out(stream.Signature(data.ArrayLayout(signed(acc_width), rows)))``
        One beat of ``rows`` dot products per ``last`` input beat.
    """

    class Signature(wiring.Signature):
        """Signature of :class:`TernaryAdderTree`; checks the shape parameters."""

        def __init__(self, lanes: int, rows: int, k_max: int, weight_format: str):
            _check_pos_int("lanes", lanes)
            _check_pos_int("rows", rows)
            _check_pos_int("k_max", k_max)
            if k_max < lanes:
                raise ValueError(f"k_max ({k_max}) must be at least lanes ({lanes})")
            if weight_format not in WEIGHT_FORMATS:
                raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, "
                                 f"not {weight_format!r}")
            self._lanes, self._rows, self._k_max = lanes, rows, k_max
            self._weight_format = weight_format
            in_layout = data.StructLayout({
                "x": data.ArrayLayout(signed(8), lanes),
                "w": data.ArrayLayout(unsigned(row_weight_bits(lanes, weight_format)), rows),
                "last": 1,
            })
            out_layout = data.ArrayLayout(signed(acc_width(k_max)), rows)
            super().__init__({"i": In(stream.Signature(in_layout)),
                              "o": Out(stream.Signature(out_layout))})

        lanes = property(lambda self: self._lanes)
        rows = property(lambda self: self._rows)
        k_max = property(lambda self: self._k_max)
        weight_format = property(lambda self: self._weight_format)

        def __eq__(self, other):
            return (type(other) is type(self) and
                    (other.lanes, other.rows, other.k_max, other.weight_format) ==
                    (self.lanes, self.rows, self.k_max, self.weight_format))

        def __repr__(self):
            return (f"TernaryAdderTree.Signature(lanes={self._lanes}, rows={self._rows}, "
                    f"k_max={self._k_max}, weight_format={self._weight_format!r})")

    def __init__(self, lanes: int, rows: int = 1, k_max: int = 4096, weight_format: str = "2bit",
                 stages: int | None = None, decode_stage: bool = True, decoder: str = "logic",
                 decoder_stages: int = 2):
        try:
            sig = self.Signature(lanes, rows, k_max, weight_format)
            levels = math.ceil(math.log2(lanes)) if lanes > 1 else 0
            if stages is None:
                stages = levels
            if not isinstance(stages, int) or isinstance(stages, bool) or \
                    not 0 <= stages <= levels:
                raise ValueError(f"stages must be an integer in 0..{levels} for {lanes} lanes, "
                                 f"not {stages!r}")
            if decoder not in DECODERS:
                raise ValueError(f"decoder must be one of {DECODERS}, not {decoder!r}")
            if decoder_stages not in (0, 1, 2) or isinstance(decoder_stages, bool):
                raise ValueError(f"decoder_stages must be 0, 1 or 2, not {decoder_stages!r}")
        except Exception:
            self._MustUse__silence = True  # a failed construction is not an unused elaboratable
            raise
        self._levels, self._stages = levels, stages
        self._decoder = decoder if weight_format == "trits5" else None
        self._decoder_stages = decoder_stages if self._decoder == "logic" else 0
        self._decode_stage = weight_format == "trits5" and (bool(decode_stage) or decoder == "rom")
        super().__init__(sig)

    lanes = property(lambda self: self.signature.lanes, doc="Activations per beat.")
    rows = property(lambda self: self.signature.rows, doc="Rows computed in parallel.")
    k_max = property(lambda self: self.signature.k_max, doc="Longest exact dot product.")
    weight_format = property(lambda self: self.signature.weight_format, doc="Packed weight format.")
    levels = property(lambda self: self._levels, doc="Adder levels in the tree.")
    stages = property(lambda self: self._stages, doc="Pipeline registers inside the tree.")
    decoder = property(lambda self: self._decoder,
                       doc="trits5 decoder implementation (``None`` for 2-bit weights).")

    @property
    def acc_width(self) -> int:
        """Width of each signed accumulator and output."""
        return acc_width(self.k_max)

    @property
    def latency(self) -> int:
        """Cycles from accepting a ``last`` beat to its output being valid (no stalls)."""
        return (len(self._register_after()) + int(self._decode_stage) + self._decoder_stages +
                int(self._decoder == "rom") + 1)

    @property
    def macs_per_cycle(self) -> int:
        """int8 x ternary products consumed per accepted beat."""
        return self.lanes * self.rows

    def _register_after(self) -> set[int]:
        # Spread the tree registers evenly over the logic between the input and the accumulator
        # register: the leaf LUT, ``levels`` adders and the accumulating adder (levels + 2 steps);
        # a register "after level p" has p adders and the leaf before it.
        n, s = self._levels, self._stages
        pos = {min(n, max(1, round((i + 1) * (n + 2) / (s + 1)) - 1)) for i in range(s)}
        for p in range(1, n + 1):  # rounding collisions: fill with the lowest free levels
            if len(pos) >= s:
                break
            pos.add(p)
        return pos

    def elaborate(self, platform):
        m = Module()
        lanes, rows = self.lanes, self.rows
        en = Signal()  # the whole pipeline advances together
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        def stage(values, name):
            # One pipeline register for a list of values, clocked while the pipeline advances.
            # values[0:2] are valid and last and keep their reset; the data registers have
            # none (rewritten every cycle the pipeline advances, read only with valid): a
            # reset on them would route the synchronous reset to every slice of the array.
            regs = []
            for k, v in enumerate(values):
                r = Signal(v.shape(), name=f"{name}_{k}", reset_less=k >= 2)
                regs.append(r)
            with m.If(en):
                m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
            return regs

        valid, last = self.i.valid, self.i.payload.last
        x = [self.i.payload.x[j] for j in range(lanes)]

        # Weight codes per row ("2bit" format: code = w + 1).
        codes = []
        for r in range(rows):
            if self._decoder == "rom":
                dec = Trits5RomDecoder(lanes)
                m.submodules[f"decoder{r}"] = dec
                m.d.comb += [dec.packed.eq(self.i.payload.w[r]), dec.en.eq(en)]
                codes.append(dec.codes)
            elif self._decoder == "logic":
                dec = Trits5Decoder(lanes, stages=self._decoder_stages)
                m.submodules[f"decoder{r}"] = dec
                m.d.comb += dec.packed.eq(self.i.payload.w[r])
                if self._decoder_stages:
                    m.d.comb += dec.en.eq(en)
                codes.append(dec.codes)
            else:
                codes.append(self.i.payload.w[r])
        for k in range(self._decoder_stages if self._decoder == "logic" else 0):
            # valid, last and x keep step with the registers inside the decoder chain
            regs = stage([valid, last, *x], f"decp{k}")
            valid, last = regs[0], regs[1]
            x = [r.as_signed() for r in regs[2:2 + lanes]]
        if self._decoder == "rom":
            # The table read is the decode register; valid, last and x are registered beside it.
            # A second register takes the table output: Yosys does not use the DP16KD output
            # register, and its clock-to-output delay followed by a leaf and an adder was the
            # slowest path of the PE (86.7 MHz at 64 lanes).
            regs = stage([valid, last, *x], "dec")
            regs = stage([*regs, *codes], "decq")
            valid, last = regs[0], regs[1]
            x = [r.as_signed() for r in regs[2:2 + lanes]]
            codes = regs[2 + lanes:]
        elif self._decode_stage:
            regs = stage([valid, last, *x, *codes], "dec")
            valid, last = regs[0], regs[1]
            x = [r.as_signed() for r in regs[2:2 + lanes]]
            codes = regs[2 + lanes:]

        # Leaves: ~x or x or 0 (8 bits), and a +1 correction bit for every negated lane.
        values, pools = [], []
        for r in range(rows):
            row_vals, row_pool = [], []
            for j in range(lanes):
                c = codes[r][2 * j:2 * j + 2]
                neg = Signal(name=f"r{r}_neg{j}")
                leaf = Signal(signed(8), name=f"r{r}_leaf{j}")
                # code 0 -> -1, 1 -> 0, 2 -> +1 (3, never produced by the packer, reads as 0)
                m.d.comb += [neg.eq(c == 0),
                             leaf.eq(Mux(c[0], 0, x[j].as_unsigned() ^ neg.replicate(8)))]
                row_vals.append(leaf)
                row_pool.append(neg)
            values.append(row_vals)
            pools.append(row_pool)

        reg_after = self._register_after()
        for level in range(1, self._levels + 1):
            for r in range(rows):
                nxt = []
                vals, pool = values[r], pools[r]
                for k in range(0, len(vals) - 1, 2):
                    a, b = vals[k], vals[k + 1]
                    cin = pool.pop() if pool else Const(0, 1)
                    width = max(len(a), len(b)) + 1
                    s = Signal(signed(width), name=f"r{r}_l{level}_s{k // 2}")
                    m.d.comb += s.eq((Cat(Const(1, 1), a).as_signed() +
                                      Cat(cin, b).as_signed())[1:])
                    nxt.append(s)
                if len(vals) % 2:
                    nxt.append(vals[-1])
                values[r], pools[r] = nxt, pool
            if level in reg_after:
                flat = [valid, last] + [v for row in values for v in row] + \
                       [p for row in pools for p in row]
                regs = stage(flat, f"l{level}")
                valid, last = regs[0], regs[1]
                pos = 2
                for r in range(rows):
                    n = len(values[r])
                    values[r] = [v.as_signed() for v in regs[pos:pos + n]]
                    pos += n
                for r in range(rows):
                    n = len(pools[r])
                    pools[r] = regs[pos:pos + n]
                    pos += n

        # Accumulate: acc + root + the last correction bit, in one carry chain.
        aw = self.acc_width
        with m.If(en):
            m.d.sync += self.o.valid.eq(valid & last)
        for r in range(rows):
            assert len(values[r]) == 1 and len(pools[r]) <= 1, (values[r], pools[r])
            root = values[r][0]
            cin = pools[r][0] if pools[r] else Const(0, 1)
            acc = Signal(signed(aw), name=f"acc{r}")
            total = Signal(signed(aw), name=f"total{r}")
            m.d.comb += total.eq((Cat(Const(1, 1), acc).as_signed() +
                                  Cat(cin, root).as_signed())[1:])
            with m.If(en & valid):
                with m.If(last):
                    m.d.sync += [self.o.payload[r].eq(total), acc.eq(0)]
                with m.Else():
                    m.d.sync += acc.eq(total)
        return m
