"""Bit-serial mixed-datatype processing element (BitMoD style) with int8 activations.

The PE computes one fixed-point dot product at a time, bit for bit as
:func:`models.bitmod.bitmod_dot_fixed` defines it. ``lanes`` weights (with their activations)
arrive per beat, all from one group of ``group_size`` weights along K. Each weight is consumed as
signed power-of-two terms, one term per lane per cycle (``+-(x << s)`` or 0,
:func:`models.bitmod.weight_terms`): ternary 1 cycle, every 3- and 4-bit type (INT3, INT4, the
eight BitMoD FP3/FP4 ER/EA types) 2 cycles, INT8 4 cycles (radix-4 Booth digits). An adder tree
sums the lanes' terms, the group accumulator collects a group's partial sum ``P_g``, and the
dequantisation unit rescales it, ``round_half_away(P_g * m_g / 2**e_g)``, and accumulates the
groups of the dot product. See docs/bitserial.md.

Pipeline
--------
lane decode (comb, from the input beat) -> register (decoded term and activation, 13 bits per
lane) -> shifter and adder tree (a register after every two adder levels) -> group accumulator
-> one-entry pending slot -> dequantisation unit (multiply, rounding add, shift by ``e[0:2]``,
shift by ``4 * e[2:5]``, output accumulator) -> result register. The main pipeline stalls as a
whole only when a group ends while the pending slot is still full; the dequantisation unit
stalls only when a dot product ends while the result register is still full.
``operands.ready`` depends on registers and on ``operands.payload.dtype`` (a beat is accepted in
its last term cycle), never on ``result.ready``.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models.bitmod import (CODE_BITS, EXTRA_VALUE, GROUP_SIZE, SCALE_EXP_BITS, SCALE_MANT_BITS,
                           TERM_TABLE, DType, decode, weight_terms)

__all__ = ["BitSerialPE", "operand_layout", "pack_operands", "result_width", "group_sum_bound",
           "BENCH_SIZES", "SERIAL_DEQUANT_CYCLES"]

#: Constructor keyword arguments of the standalone sizes that bench/pe_sweep.py builds.
BENCH_SIZES = [
    {"lanes": 16},                       # serial dequantiser (auto)
    {"lanes": 16, "dequant": "dsp"},     # the same with the DSP dequantiser, for comparison
    {"lanes": 64},                       # DSP dequantiser (auto)
    {"lanes": 128},                      # DSP dequantiser (auto)
]

_LANE_TERM_BITS = 13      # +-(x << 4) with x in -128..127: |term| <= 2048
_DEQUANT_KINDS = ("auto", "serial", "dsp")
#: Cycles the serial dequantiser spends on one group with a full 16-bit scale mantissa.
SERIAL_DEQUANT_CYCLES = SCALE_MANT_BITS


def operand_layout(lanes: int) -> data.StructLayout:
    """Payload of one input beat: ``lanes`` weights and activations plus the group's controls.

    Fields, LSB first: ``w`` (``lanes`` x 8-bit codes, lane 0 lowest), ``x`` (``lanes`` x int8),
    ``dtype`` (4-bit :class:`models.bitmod.DType`), ``scale_m`` (16 bits), ``scale_e`` (5 bits),
    ``last`` (1 bit: last beat of the dot product; also ends the group).
    """
    return data.StructLayout({
        "w": data.ArrayLayout(unsigned(8), lanes),
        "x": data.ArrayLayout(signed(8), lanes),
        "dtype": unsigned(4),
        "scale_m": unsigned(SCALE_MANT_BITS),
        "scale_e": unsigned(SCALE_EXP_BITS),
        "last": unsigned(1),
    })


def pack_operands(lanes: int, w, x, dtype: int, scale_m: int = 0, scale_e: int = 0,
                  last: bool = False) -> int:
    """The flat integer value of one :func:`operand_layout` beat (for testbenches and drivers)."""
    w, x = list(w), list(x)
    if len(w) != lanes or len(x) != lanes:
        raise ValueError(f"need {lanes} weight codes and activations, got {len(w)} and {len(x)}")
    layout = operand_layout(lanes)
    fields = dict(iter(layout))
    value = 0
    for i, (c, a) in enumerate(zip(w, x)):
        if not 0 <= int(c) < 256 or not -128 <= int(a) < 128:
            raise ValueError(f"lane {i}: code {c} or activation {a} out of range")
        value |= (int(c) & 0xFF) << (fields["w"].offset + 8 * i)
        value |= (int(a) & 0xFF) << (fields["x"].offset + 8 * i)
    for name, v in (("dtype", dtype), ("scale_m", scale_m), ("scale_e", scale_e),
                    ("last", int(bool(last)))):
        width = fields[name].width
        if not 0 <= int(v) < 1 << width:
            raise ValueError(f"{name} = {v} does not fit {width} bits")
        value |= int(v) << fields[name].offset
    return value


def group_sum_bound(group_size: int) -> int:
    """Largest ``|P_g|``: INT8 -128 times activation -128 on every weight of the group."""
    return 128 * 128 * group_size


def result_width(group_size: int, max_groups: int) -> int:
    """Signed width of the result: ``max_groups`` groups of ``|P_g| * (2**16 - 1)``."""
    bound = max_groups * group_sum_bound(group_size) * ((1 << SCALE_MANT_BITS) - 1)
    return bound.bit_length() + 1


def _is_pow2(n) -> bool:
    return isinstance(n, int) and n > 0 and n & (n - 1) == 0


class BitSerialPE(wiring.Component):
    """Bit-serial mixed-datatype dot-product PE: int8 activations, per-group weight datatypes.

    Parameters
    ----------
    lanes : int
        Weights consumed per term cycle (power of two, at most ``group_size``).
    group_size : int
        Weights per group (power of two, default 128); each group has one datatype and scale.
    max_groups : int
        Most groups in one dot product that the result width holds without overflow.
    dequant : {"auto", "serial", "dsp"}
        Scale multiplier of the dequantisation unit: ``"serial"`` shift-adds one scale bit per
        cycle (at most 16 cycles per group, no DSP); it keeps up while a 3/4-bit group takes at
        least 16 cycles, ``2 * group_size / lanes >= 16`` (lanes <= 16 at group 128).
        ``"dsp"`` multiplies ``P * m`` as two registered partial products on two MULT18X18D
        and sums them in the next cycle: one group per two cycles, enough for every lane count
        up to 128. ``"auto"`` (default) picks ``"serial"`` where it keeps up and ``"dsp"``
        otherwise. Ternary groups bypass the multiplier in both.

    Members
    -------
    operands : ``In(stream.Signature(operand_layout(lanes)))``
        Weight codes, activations and the group's datatype and fixed-point scale. A group is
        ``group_size / lanes`` beats (or fewer if ``last`` ends it); ``dtype``, ``scale_m`` and
        ``scale_e`` must be the same on every beat of a group (the scale is taken from the
        group's final beat). A beat is accepted after its last term cycle.
    result : ``Out(stream.Signature(signed(result_width(group_size, max_groups))))``
        One fixed-point dot product per ``last`` beat, equal to
        :func:`models.bitmod.bitmod_dot_fixed`.
    """

    class Signature(wiring.Signature):
        """Signature of :class:`BitSerialPE`; checks ``lanes``, ``group_size``, ``max_groups``."""

        def __init__(self, lanes: int, *, group_size: int = GROUP_SIZE, max_groups: int = 64):
            if not _is_pow2(group_size):
                raise ValueError(f"group_size must be a power of two, not {group_size!r}")
            if not _is_pow2(lanes) or lanes > group_size:
                raise ValueError(f"lanes must be a power of two no larger than group_size "
                                 f"({group_size}), not {lanes!r}")
            if not (isinstance(max_groups, int) and max_groups >= 1):
                raise ValueError(f"max_groups must be a positive int, not {max_groups!r}")
            self._lanes, self._group_size, self._max_groups = lanes, group_size, max_groups
            super().__init__({
                "operands": In(stream.Signature(operand_layout(lanes))),
                "result": Out(stream.Signature(signed(result_width(group_size, max_groups)))),
            })

        @property
        def lanes(self) -> int:
            return self._lanes

        @property
        def group_size(self) -> int:
            return self._group_size

        @property
        def max_groups(self) -> int:
            return self._max_groups

        def __eq__(self, other):
            return (type(other) is type(self) and other.lanes == self.lanes
                    and other.group_size == self.group_size
                    and other.max_groups == self.max_groups)

        def __repr__(self):
            return (f"BitSerialPE.Signature({self._lanes}, group_size={self._group_size}, "
                    f"max_groups={self._max_groups})")

    def __init__(self, lanes: int = 16, *, group_size: int = GROUP_SIZE, max_groups: int = 64,
                 dequant: str = "auto"):
        try:
            if dequant not in _DEQUANT_KINDS:
                raise ValueError(f"dequant must be one of {_DEQUANT_KINDS}, not {dequant!r}")
            signature = self.Signature(lanes, group_size=group_size, max_groups=max_groups)
        except Exception:
            self._MustUse__silence = True  # a failed construction is not an unused elaboratable
            raise
        if dequant == "auto":
            keeps_up = 2 * group_size // lanes >= SERIAL_DEQUANT_CYCLES
            dequant = "serial" if keeps_up else "dsp"
        self._dequant = dequant
        super().__init__(signature)

    @property
    def lanes(self) -> int:
        return self.signature.lanes

    @property
    def group_size(self) -> int:
        return self.signature.group_size

    @property
    def max_groups(self) -> int:
        return self.signature.max_groups

    @property
    def dequant(self) -> str:
        """The dequantiser built: ``"serial"`` or ``"dsp"`` (``"auto"`` resolved)."""
        return self._dequant

    @property
    def result_width(self) -> int:
        return result_width(self.group_size, self.max_groups)

    @property
    def weights_per_cycle(self) -> int:
        """Weights consumed per cycle in the ternary steady state (one term each)."""
        return self.lanes

    @property
    def macs_per_cycle(self) -> float:
        """Multiply-accumulates per cycle for 3/4-bit (BitMoD) weights: ``lanes / 2``."""
        return self.lanes / 2

    # -- elaboration ------------------------------------------------------------------------------

    @staticmethod
    def _sm_rom(bits: int) -> dict:
        """Decode ROM of the ``bits``-bit sign-magnitude codes (INT3/FP3 or INT4/FP4).

        ``{(is_fp, code, j0): (nz, negate, shift, use_extra)}`` with entries from
        :func:`models.bitmod.weight_terms`, so the gateware decodes what the model defines. The
        "-0" code of an FP type selects the extra value's term, decoded once for all lanes
        (``use_extra``). Missing keys are zero terms.
        """
        rom = {}
        for is_fp, dt in enumerate((DType.INT3, DType.FP3_ER_POS) if bits == 3 else
                                   (DType.INT4, DType.FP4_ER_POS)):
            for code in range(1 << bits):
                for j0 in range(2):
                    if is_fp and code == 1 << (bits - 1):
                        rom[(is_fp, code, j0)] = (0, 0, 0, 1)
                        continue
                    term = weight_terms(int(decode([code], dt)[0]), dt)[j0]
                    if term is not None:
                        rom[(is_fp, code, j0)] = (1, term[0], term[1], 0)
        return rom

    def _lane_decode(self, m, code, ctl, name):
        """Decode one lane's code for the current term index: ``(nz, negate, shift)``."""
        j0 = ctl["j"][0]
        # Ternary: code 0 -> -1, 2 -> +1, 1 and 3 -> 0.
        t_nz, t_neg = ~code[0], ~code[1]
        # INT8, radix-4 Booth digit j: window b[2j+1] b[2j] b[2j-1] (b[-1] = 0); the digit's own
        # shift is 0 or 1, the common 2j is applied after the adder tree.
        triple = Signal(3, name=f"{name}_booth")
        with m.Switch(ctl["j"]):
            for j in range(4):
                with m.Case(j):
                    m.d.comb += triple.eq(Cat(Const(0, 1), code)[2 * j:2 * j + 3])
        b_nz = (triple != 0) & (triple != 7)
        b_neg = triple[2]
        b_two = (triple == 3) | (triple == 4)
        # 3- and 4-bit sign-magnitude codes: one small ROM each (6 and 5 inputs).
        roms = {}
        for bits in (3, 4):
            out = [Signal(name=f"{name}_s{bits}nz"), Signal(name=f"{name}_s{bits}neg"),
                   Signal(3, name=f"{name}_s{bits}sh"), Signal(name=f"{name}_s{bits}ex")]
            with m.Switch(Cat(j0, code[0:bits], ctl["is_fp"])):
                for (is_fp, c, jj), values in self._sm_rom(bits).items():
                    with m.Case(jj | c << 1 | is_fp << (bits + 1)):
                        m.d.comb += [o.eq(v) for o, v in zip(out, values)]
            roms[bits] = out
        s3, s4 = roms[3], roms[4]
        use_ex = Signal(name=f"{name}_ex")
        m.d.comb += use_ex.eq((ctl["sel3"] & s3[3]) | (ctl["sel4"] & s4[3]))
        nz, neg, shift = (Signal(name=f"{name}_nz"), Signal(name=f"{name}_neg"),
                          Signal(3, name=f"{name}_shift"))
        m.d.comb += [
            nz.eq((ctl["is_tern"] & t_nz) | (ctl["is_int8"] & b_nz) | (ctl["sel3"] & s3[0])
                  | (ctl["sel4"] & s4[0]) | (use_ex & ctl["ex_nz"])),
            neg.eq((ctl["is_tern"] & t_neg) | (ctl["is_int8"] & b_neg) | (ctl["sel3"] & s3[1])
                   | (ctl["sel4"] & s4[1]) | (use_ex & ctl["ex_neg"])),
            shift.eq((ctl["is_int8"] & b_two).replicate(1)
                     | (ctl["sel3"].replicate(3) & s3[2]) | (ctl["sel4"].replicate(3) & s4[2])
                     | (use_ex.replicate(3) & ctl["ex_shift"])),
        ]
        return nz, neg, shift

    @staticmethod
    def _lane_shift(m, x, nz, neg, shift, name):
        """The term of one lane from its registered decode, with its negation left to the tree.

        Returns ``(raw, carry)``: ``raw`` is ``x << shift`` for a positive term,
        ``~(x << shift)`` for a negative one and 0 for a zero term; ``carry`` is 1 for a
        negative term, so that ``raw + carry`` is the term (the carries of all lanes are counted
        in a tree beside the adder tree and added once at its root). Two stages: ``a = (x ^ neg) << shift[0]`` filled
        with ``neg`` (or 0), then ``a << (2 * shift[1] + 4 * shift[2])``.
        """
        fill = Signal(name=f"{name}_fill")
        m.d.comb += fill.eq(nz & neg)
        xe = Signal(signed(8), name=f"{name}_xe")
        m.d.comb += xe.eq(Mux(nz, x ^ neg.replicate(8), 0))
        a = Signal(signed(9), name=f"{name}_a")
        m.d.comb += a.eq(Mux(shift[0], Cat(fill, xe).as_signed(), xe))
        raw = Signal(signed(_LANE_TERM_BITS), name=f"{name}_raw")
        m.d.comb += raw.eq(Mux(shift[2], Cat(fill.replicate(4), a).as_signed(),
                               Mux(shift[1], Cat(fill.replicate(2), a).as_signed(), a)))
        return raw, fill

    def elaborate(self, platform):
        m = Module()
        lanes, gs = self.lanes, self.group_size
        inp, res = self.operands, self.result
        pl = inp.payload
        rw = self.result_width
        pbits = group_sum_bound(gs).bit_length() + 1          # signed group partial sum
        prod_bits = pbits + SCALE_MANT_BITS

        adv = Signal()                                         # the main pipeline moves

        # -- per-beat controls decoded from dtype ----------------------------------------------
        dtype = pl.dtype
        ctl = {
            "is_tern": Signal(name="is_tern"), "is_int8": Signal(name="is_int8"),
            "sel3": Signal(name="sel3"), "sel4": Signal(name="sel4"), "is_fp": Signal(name="is_fp"),
            "j": Signal(2, name="term_idx"),
            "ex_nz": Signal(name="extra_nz"), "ex_neg": Signal(name="extra_neg"),
            "ex_shift": Signal(3, name="extra_shift"),
        }
        three = [dt for dt in DType if dt != DType.INT8 and CODE_BITS[dt] == 3]
        four = [dt for dt in DType if dt != DType.INT8 and CODE_BITS[dt] == 4]
        m.d.comb += [
            ctl["is_tern"].eq(dtype == DType.TERNARY),
            ctl["is_int8"].eq(dtype == DType.INT8),
            ctl["sel3"].eq(dtype.matches(*three)),
            ctl["sel4"].eq(dtype.matches(*four)),
            ctl["is_fp"].eq(dtype.matches(*[dt for dt in DType if dt.name.startswith("FP")])),
        ]
        # The term of the extra ("-0") value is the same for every lane: decoded once per cycle.
        with m.Switch(Cat(ctl["j"][0], dtype)):
            for dt, v in EXTRA_VALUE.items():
                for j, t in enumerate(TERM_TABLE[abs(v)]):
                    with m.Case(j | int(dt) << 1):
                        m.d.comb += [ctl["ex_nz"].eq(1), ctl["ex_neg"].eq((v < 0) ^ t[0]),
                                     ctl["ex_shift"].eq(t[1])]
        last_term = Signal()
        m.d.comb += last_term.eq(Mux(ctl["is_tern"], 1,
                                     Mux(ctl["is_int8"], ctl["j"] == 3, ctl["j"] == 1)))

        beats_per_group = gs // lanes
        beat_cnt = Signal(range(beats_per_group))
        group_end_beat = Signal()
        m.d.comb += group_end_beat.eq((beat_cnt == beats_per_group - 1) | pl.last)
        m.d.comb += inp.ready.eq(adv & last_term)
        with m.If(inp.valid & adv):
            m.d.sync += ctl["j"].eq(Mux(last_term, 0, ctl["j"] + 1))
            with m.If(last_term):
                m.d.sync += beat_cnt.eq(Mux(group_end_beat, 0, beat_cnt + 1))

        # -- stage 1: lane terms and the tag that travels with them -----------------------------
        tag_layout = data.StructLayout({
            "valid": 1, "cshift": 2, "group_end": 1, "dot_last": 1, "tern": 1,
            "m": SCALE_MANT_BITS, "e": SCALE_EXP_BITS,
        })
        # The pipeline register sits between the decode and the shifter (13 bits per lane, as
        # many as the term itself): synthesis maps the two halves separately, far smaller than
        # one combinational cloud.
        tag = Signal(tag_layout, name="tag1")
        dec = []
        for i in range(lanes):
            nz, neg, shift = self._lane_decode(m, pl.w[i], ctl, f"lane{i}")
            r_nz, r_neg = Signal(name=f"r_nz{i}"), Signal(name=f"r_neg{i}")
            r_shift, r_x = Signal(3, name=f"r_shift{i}"), Signal(signed(8), name=f"r_x{i}")
            with m.If(adv):
                m.d.sync += [r_nz.eq(nz), r_neg.eq(neg), r_shift.eq(shift), r_x.eq(pl.x[i])]
            dec.append((r_x, r_nz, r_neg, r_shift))
        with m.If(adv):
            m.d.sync += [
                tag.valid.eq(inp.valid),
                tag.cshift.eq(Mux(ctl["is_int8"], ctl["j"], 0)),
                tag.group_end.eq(group_end_beat & last_term),
                tag.dot_last.eq(pl.last & last_term),
                tag.tern.eq(ctl["is_tern"]),
                tag.m.eq(pl.scale_m),
                tag.e.eq(pl.scale_e),
            ]

        # -- stage 2: each lane's shifted term and its carry ------------------------------------
        vals, cars = [], []
        for i, d in enumerate(dec):
            raw, carry = self._lane_shift(m, *d, f"lane{i}")
            r_raw = Signal(signed(_LANE_TERM_BITS), name=f"r_raw{i}")
            r_carry = Signal(name=f"r_carry{i}")
            with m.If(adv):
                m.d.sync += [r_raw.eq(raw), r_carry.eq(carry)]
            vals.append(r_raw)
            cars.append(r_carry)
        tag2 = Signal(tag_layout, name="tag2")
        with m.If(adv):
            m.d.sync += tag2.eq(tag)
        tag = tag2

        # -- adder tree over the terms and, beside it, over the carries; a register per level --
        depth = 0
        while len(vals) > 1:
            nv, nc = [], []
            for k in range(0, len(vals), 2):
                sv = Signal(signed(len(vals[k]) + 1), name=f"tree{depth}_{k // 2}")
                sc = Signal(range(2 ** (depth + 1) + 1), name=f"carries{depth}_{k // 2}")
                with m.If(adv):
                    m.d.sync += [sv.eq(vals[k] + vals[k + 1]), sc.eq(cars[k] + cars[k + 1])]
                nv.append(sv)
                nc.append(sc)
            rtag = Signal(tag_layout, name=f"tag_tree{depth}")
            with m.If(adv):
                m.d.sync += rtag.eq(tag)
            vals, cars, tag, depth = nv, nc, rtag, depth + 1
        # The lanes' +1s of negative terms, counted once: |sum| <= lanes * 2048 + lanes.
        tree = Signal(signed(len(vals[0]) + 1), name="tree_sum")
        ttag = Signal(tag_layout, name="tag_sum")
        with m.If(adv):
            m.d.sync += [tree.eq(vals[0] + cars[0]), ttag.eq(tag)]

        # -- group accumulator and the pending slot ---------------------------------------------
        acc_p = Signal(signed(pbits))
        contrib = Signal(signed(pbits))
        m.d.comb += contrib.eq(tree << Cat(Const(0, 1), ttag.cshift))
        pend_full = Signal()
        pend_p = Signal(signed(pbits))
        pend_m = Signal(SCALE_MANT_BITS)
        pend_e = Signal(SCALE_EXP_BITS)
        pend_last, pend_tern = Signal(), Signal()
        take = Signal()                                        # the dequantiser loads pending
        # From registers only (not from `take`): the enable of every pipeline register must be
        # shallow. A group that ends just as the slot is being emptied waits one cycle.
        m.d.comb += adv.eq(~(ttag.valid & ttag.group_end & pend_full))
        with m.If(take):
            m.d.sync += pend_full.eq(0)
        with m.If(adv & ttag.valid):
            with m.If(ttag.group_end):
                m.d.sync += [
                    acc_p.eq(0), pend_full.eq(1), pend_p.eq(acc_p + contrib),
                    pend_m.eq(ttag.m), pend_e.eq(ttag.e), pend_last.eq(ttag.dot_last),
                    pend_tern.eq(ttag.tern),
                ]
            with m.Else():
                m.d.sync += acc_p.eq(acc_p + contrib)

        # -- dequantisation unit: multiply, round (add, shift, shift), accumulate ---------------
        out_valid = Signal()
        out_data = Signal(signed(rw))
        m.d.comb += [res.valid.eq(out_valid), res.payload.eq(out_data)]
        with m.If(res.valid & res.ready):
            m.d.sync += out_valid.eq(0)

        d1_valid, d1_last = Signal(), Signal()
        d1_prod = Signal(signed(prod_bits))
        d1_e = Signal(SCALE_EXP_BITS)
        d1_mrem = Signal(SCALE_MANT_BITS)                      # serial: scale bits still to add
        d1_mcand = Signal(signed(prod_bits))                   # serial: P << (bits done)
        # DSP: two partial products (low 17 bits of P, and the rest) registered out of the
        # multipliers, summed in the next cycle: two cycles per group.
        lo_bits = min(17, pbits - 1)
        d1_pp_lo = Signal(lo_bits + SCALE_MANT_BITS, name="pp_lo")
        d1_pp_hi = Signal(signed(pbits - lo_bits + SCALE_MANT_BITS), name="pp_hi")
        d1_busy = Signal(name="dsp_busy")
        d1_done = Signal()
        m.d.comb += d1_done.eq(d1_valid & (d1_mrem == 0) & ~d1_busy)
        rbits = prod_bits + 1
        s2_valid, s2_last, s2_r, s2_e = (Signal(), Signal(), Signal(signed(rbits)),
                                         Signal(SCALE_EXP_BITS))
        s3_valid, s3_last, s3_r, s3_e = (Signal(), Signal(), Signal(signed(rbits)),
                                         Signal(SCALE_EXP_BITS - 2))
        s4_valid, s4_last, s4_r = Signal(), Signal(), Signal(signed(rbits))
        acc_out = Signal(signed(rw))

        dq_adv = Signal()
        m.d.comb += dq_adv.eq(~(s4_valid & s4_last & out_valid))
        m.d.comb += take.eq(dq_adv & pend_full & (~d1_valid | d1_done))

        # Round half away from zero: (prod + 2**(e-1) - (prod < 0)) >> e for e > 0, written as
        # prod + (2**(e-1) - 1) + (prod >= 0): the mask 2**(e-1) - 1 is made when the group is
        # loaded, so the rounding is one carry chain; the arithmetic shift follows in two
        # registered stages (by e[0:2], then by 4 * e[2:5]).
        d1_mask = Signal(prod_bits, name="round_mask")          # 2**(e-1) - 1, or 0
        d1_round = Signal(name="round_en")                      # e > 0
        neg = d1_prod < 0
        shift_lo = Signal(signed(rbits), name="round_shift_lo")
        with m.Switch(s2_e[0:2]):
            for v in range(4):
                with m.Case(v):
                    m.d.comb += shift_lo.eq(s2_r >> v)
        shift_hi = Signal(signed(rbits), name="round_shift_hi")
        with m.Switch(s3_e):
            for v in range(1 << (SCALE_EXP_BITS - 2)):
                with m.Case(v):
                    m.d.comb += shift_hi.eq(s3_r >> (4 * v))

        with m.If(dq_adv):
            with m.If(s4_valid):
                with m.If(s4_last):
                    m.d.sync += [out_data.eq(acc_out + s4_r), out_valid.eq(1), acc_out.eq(0)]
                with m.Else():
                    m.d.sync += acc_out.eq(acc_out + s4_r)
            m.d.sync += [s4_valid.eq(s3_valid), s4_last.eq(s3_last), s4_r.eq(shift_hi)]
            m.d.sync += [s3_valid.eq(s2_valid), s3_last.eq(s2_last), s3_r.eq(shift_lo),
                         s3_e.eq(s2_e[2:])]
            m.d.sync += [s2_valid.eq(d1_done), s2_last.eq(d1_last),
                         s2_r.eq(d1_prod + d1_mask + (d1_round & ~neg)), s2_e.eq(d1_e)]
            with m.If(take):
                m.d.sync += [d1_valid.eq(1), d1_last.eq(pend_last)]
                with m.If(pend_tern):
                    m.d.sync += [d1_prod.eq(pend_p), d1_e.eq(0), d1_mrem.eq(0), d1_mask.eq(0),
                                 d1_round.eq(0)]
                with m.Else():
                    m.d.sync += [d1_e.eq(pend_e), d1_round.eq(pend_e != 0),
                                 d1_mask.eq(Cat(*(pend_e > k + 1 for k in range(prod_bits))))]
                    if self._dequant == "dsp":
                        m.d.sync += [
                            d1_pp_lo.eq(pend_p[:lo_bits] * pend_m),
                            d1_pp_hi.eq(pend_p[lo_bits:].as_signed() * pend_m),
                            d1_busy.eq(1), d1_mrem.eq(0),
                        ]
                    else:
                        # First scale bit in the load cycle: 16 cycles for a 16-bit mantissa.
                        m.d.sync += [
                            d1_prod.eq(Mux(pend_m[0], pend_p, 0)),
                            d1_mcand.eq(pend_p << 1),
                            d1_mrem.eq(pend_m >> 1),
                        ]
            with m.Elif(d1_done):
                m.d.sync += d1_valid.eq(0)
            with m.Elif(d1_busy):
                m.d.sync += [d1_prod.eq(d1_pp_lo + (d1_pp_hi << lo_bits)), d1_busy.eq(0)]
            with m.Elif(d1_valid):
                m.d.sync += [
                    d1_prod.eq(d1_prod + Mux(d1_mrem[0], d1_mcand, 0)),
                    d1_mcand.eq(d1_mcand << 1),
                    d1_mrem.eq(d1_mrem >> 1),
                ]
        return m
