"""Model compiler: memory images and the per-token program of the accelerator core.

:func:`compile_model` turns a ternary model (its integer-reference constants,
:meth:`models.intref.IntRefModel.constants`) into everything the board needs for one model:

* the GEMV engine's weight image (:func:`sw.compiler.layout_weights`),
* the vector unit's constant memory ``CMEM`` (embedding mantissas and shifts, norm-weight
  mantissas ``wp`` / ``wc``, ``1 - lb``), its scalar tables ``TMEM`` (reciprocal and rsqrt seeds)
  and the sigmoid table ``SIGMEM``,
* the vector memory map ``VMEM`` (residual, per-layer state, temporaries, logits),
* the straight-line program run once per token and a reset program that zeroes the state,

and a summary of the memory sizes they need (:meth:`CompiledModel.summary`). A model that does
not fit the given :class:`MemorySizes` is refused with :class:`sw.compiler.ModelTooLarge`.
The instruction set is :mod:`sw.isa`; ``docs/isa.md`` describes the program's structure.

Only numpy is needed at run time; a checkpoint (rather than its constants) is converted through
:class:`models.intref.IntRefModel`, which is imported on demand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .compiler import ModelTooLarge, WeightImage, layout_weights
from .isa import (CMEM_BITS, INSTR_BITS, REG_NEXT, REG_TOKEN, VMEM_BITS, Instr, Op, gemv_imm,
                  program_bytes)

__all__ = ["MemorySizes", "CompiledModel", "compile_model", "ModelTooLarge", "model_constants"]

# Field limits of the instruction set (sw.isa).
_MAX_N = (1 << 16) - 1
_MAX_ADDR = (1 << 20) - 1

# Scalar register allocation of the generated program (r0 = 0, r1 = token, r2 = next token).
R_HMAX, R_SZ, R_SS, R_Q, R_K = 3, 4, 5, 6, 7
R_M = (8, 9, 10)               # max|z' wc| of up to three consumers of one group
R_MN, R_T, R_RQ, R_P, R_PM, R_PE, R_SM, R_SE, R_K2, R_SH = 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
R_FI, R_FF, R_CS, R_SMAX, R_YSH, R_GMAX, R_ZMAX, R_EROW, R_ESH, R_T0, R_T1 = \
    21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31


@dataclass(frozen=True)
class MemorySizes:
    """Memory sizes of a bitstream (``None``: no limit). Words of each memory's own width."""

    weight_words: int | None = None   # WMEM, rows x row_bits per word
    k_max: int | None = None          # longest GEMV input (one AMEM bank)
    vmem_words: int | None = None     # VMEM, 36-bit
    cmem_words: int | None = None     # CMEM, 18-bit
    tmem_words: int | None = None     # TMEM, 18-bit
    prog_words: int | None = None     # PMEM, 128-bit


@dataclass
class CompiledModel:
    """Everything the host loads for one model, plus the maps the executor and runtime use.

    Members
    -------
    program : list of Instr
        Run once per token (``r1`` = token in, ``r2`` = next token out, logits at
        ``vmem_map["logits"]``).
    reset_program : list of Instr
        Zeroes every layer's state.
    weights : WeightImage
    cmem, tmem, sigmem : numpy.ndarray
        int64 images (18-bit signed, 18-bit unsigned, 18-bit unsigned words).
    vmem_words : int
        VMEM words the program uses.
    vmem_map, cmem_map : dict
        Region name -> (address, length).
    probes : list of (int, str)
        After instruction ``pc`` the VMEM region ``name`` holds a named value of the reference
        (``h0`` .. ``hL``: residual after the embedding / each layer).
    """

    d_model: int
    n_layers: int
    vocab_size: int
    d_ff: int
    lanes: int
    rows: int
    fmt: str
    program: list
    reset_program: list
    weights: WeightImage
    cmem: np.ndarray
    tmem: np.ndarray
    sigmem: np.ndarray
    vmem_words: int
    vmem_map: dict
    cmem_map: dict
    tmem_map: dict
    probes: list = field(default_factory=list)
    gemv_macs: int = 0   # useful MACs per token (sum of M * K over the GEMVs)

    def summary(self) -> dict:
        """Memory sizes needed (manifest-compatible: one size per memory id, see ``mem_ids``)."""
        sizes = {
            "pmem_words": len(self.program) + len(self.reset_program),
            "wmem_words": len(self.weights.words),
            "k_max": max(self.d_model, self.d_ff),
            "vmem_words": self.vmem_words,
            "cmem_words": int(self.cmem.size),
            "tmem_words": int(self.tmem.size),
            "sigmem_words": int(self.sigmem.size),
        }
        bits = {
            "pmem_bits": sizes["pmem_words"] * INSTR_BITS,
            "wmem_bits": sizes["wmem_words"] * self.weights.word_bits,
            "vmem_bits": self.vmem_words * VMEM_BITS,
            "cmem_bits": sizes["cmem_words"] * CMEM_BITS,
        }
        return {
            "model": {"d_model": self.d_model, "n_layers": self.n_layers, "vocab_size": self.vocab_size,
                      "d_ff": self.d_ff},
            "engine": {"lanes": self.lanes, "rows": self.rows, "weight_format": self.fmt,
                       "word_bits": self.weights.word_bits},
            "program_instructions": len(self.program),
            "reset_instructions": len(self.reset_program),
            "mem_ids": ["pmem", "wmem", "vmem", "cmem", "tmem", "sigmem"],
            "mem_sizes": [sizes["pmem_words"], sizes["wmem_words"], sizes["vmem_words"], sizes["cmem_words"],
                          sizes["tmem_words"], sizes["sigmem_words"]],
            **sizes, **bits,
            "gemv_macs_per_token": self.gemv_macs,
        }

    def program_image(self) -> bytes:
        """PMEM contents: the token program followed by the reset program."""
        return program_bytes(self.program) + program_bytes(self.reset_program)


def model_constants(model) -> dict:
    """Integer constants of ``model``: an ``IntRefModel``, a checkpoint (path or object) or a dict."""
    if isinstance(model, dict):
        return model
    if hasattr(model, "constants"):
        return model.constants()
    from models.intref import IntRefModel  # needs torch; only for conversion from a checkpoint

    if isinstance(model, (str, os.PathLike)) or hasattr(model, "tensors"):
        return IntRefModel(model).constants()
    raise TypeError(f"cannot compile {type(model).__name__}: need IntRefModel, Checkpoint, path or constants")


class _Alloc:
    def __init__(self, what: str):
        self.what, self.top, self.map = what, 0, {}

    def __call__(self, name: str, n: int) -> int:
        a = self.top
        self.map[name] = (a, int(n))
        self.top += int(n)
        return a


def compile_model(model, lanes: int, rows: int, fmt: str = "2bit", sizes: MemorySizes | None = None,
                  rsqrt_after_vq: bool = True) -> CompiledModel:
    """Compile ``model`` for an engine of ``lanes`` x ``rows`` and the given memory sizes.

    Parameters
    ----------
    model : IntRefModel, Checkpoint, path or dict
        The model; a dict must be :meth:`IntRefModel.constants` output.
    lanes, rows : int
        GEMV engine shape (inputs per beat, outputs in parallel).
    fmt : str
        Weight packing, ``"2bit"`` or ``"trits5"``.
    sizes : MemorySizes, optional
        The bitstream's memories; default: no limits.
    rsqrt_after_vq : bool
        Where each normalisation group's rsqrt goes: after the group's first ``VQ`` (default: the
        gateware's sequencer runs it beside that ``VQ``, docs/core.md) or before it, right after
        the group's ``VNQA`` (the order the cycle model of ``sw.isa_sim`` schedules best). The
        results are the same either way.

    Raises
    ------
    ModelTooLarge
        A memory (or an instruction field) is too small for the model; the message names it and
        both sizes.
    """
    sizes = sizes or MemorySizes()
    c = model_constants(model)
    emb = np.asarray(c["emb.mant"], dtype=np.int64)
    V, d = emb.shape
    L = 0
    while f"model.layers.{L}.om_lb" in c:
        L += 1
    d_ff = int(np.shape(c["model.layers.0.mlp.down_proj.weight"])[1]) if L else 0
    if L == 0:
        raise ValueError("model has no layers")
    fm = {k[7:]: int(v) for k, v in c.items() if k.startswith("format.")}
    for what, n in (("d_model", d), ("d_ff", d_ff), ("vocab_size", V)):
        if n > _MAX_N:
            raise ModelTooLarge(f"{what} = {n}: vector instructions take at most {_MAX_N} elements")
    k_max = max(d, d_ff)
    if sizes.k_max is not None and k_max > sizes.k_max:
        raise ModelTooLarge(f"the model's GEMVs take {k_max} inputs; the engine takes at most {sizes.k_max}")

    # ------------------------------------------------------------------ weights
    names = []
    for n in range(L):
        p = f"model.layers.{n}."
        names += [p + "attn.i_proj", p + "attn.f_proj", p + "attn.g_proj", p + "attn.o_proj",
                  p + "mlp.gate_proj", p + "mlp.down_proj"]
    names.append("lm_head")
    weights = layout_weights({nm: c[f"{nm}.weight"] for nm in names}, lanes, rows, fmt,
                             depth=sizes.weight_words, k_max=sizes.k_max)
    if len(weights.words) > _MAX_ADDR + 1:
        raise ModelTooLarge(f"{len(weights.words)} weight words: GEMV base addresses have 20 bits")
    macs = sum(s.out_features * s.in_features for s in weights.slots.values())

    # ------------------------------------------------------------------ CMEM
    ca = _Alloc("cmem")
    chunks = []

    def put(name, arr, residue=None):
        arr = np.asarray(arr, dtype=np.int64).reshape(-1)
        lim = 1 << (CMEM_BITS - 1)
        if arr.size and (arr.min() < -lim or arr.max() >= lim):
            raise ValueError(f"{name}: constant does not fit {CMEM_BITS}-bit signed CMEM words")
        if residue is not None and ca.top % 8 != residue:
            pad = (residue - ca.top) % 8                # pad words: start on the asked bank
            chunks.append(np.zeros(pad, np.int64))
            ca.top += pad
        chunks.append(arr)
        return ca(name, arr.size)

    EMB = put("emb.mant", emb)
    EMBSH = put("emb.shift", c["emb.shift"])
    # The two constant streams of a VNQA (wp, the first wc) and of a VUMAX2 (the second and third
    # wc, or the second and word 0) start four words apart modulo 8, every stream at 0 modulo 4 (a
    # VQ's wc too): CMEM is eight banks by address modulo 8, and the vector unit reads four words of
    # each stream per cycle then, one per bank, lane k from bank k or k + 4
    # (hw/core/vector_unit.py, the four-lane paths).
    residue = {"attn_in.wp": 0, "attn.i_proj.wc": 4, "attn.f_proj.wc": 0, "attn.g_proj.wc": 4, "attn.o_in.wp": 0,
               "attn.o_proj.wc": 4, "mlp_in.wp": 0, "mlp.gate_proj.wc": 4, "mlp.down_in.wp": 0,
               "mlp.down_proj.wc": 4, "om_lb": None}
    cm = {}
    for n in range(L):
        p = f"model.layers.{n}."
        for key, res in residue.items():
            cm[p + key] = put(p + key, c[p + key], res)
    cm["model.final_in.wp"] = put("model.final_in.wp", c["model.final_in.wp"], 0)
    cm["lm_head.wc"] = put("lm_head.wc", c["lm_head.wc"], 4)
    cmem = np.concatenate(chunks)
    if sizes.cmem_words is not None and cmem.size > sizes.cmem_words:
        raise ModelTooLarge(f"the constants need {cmem.size} CMEM words; CMEM holds {sizes.cmem_words}")
    if cmem.size > _MAX_ADDR + 1:
        raise ModelTooLarge(f"{cmem.size} CMEM words: CMEM addresses have 20 bits")

    # ------------------------------------------------------------------ TMEM, SIGMEM
    recip = np.asarray(c["table.recip"], dtype=np.int64)
    rsqrt = np.asarray(c["table.rsqrt"], dtype=np.int64)
    tmem = np.concatenate([recip, rsqrt])
    tmem_map = {"recip": (0, recip.size), "rsqrt": (recip.size, rsqrt.size)}
    TAB_RECIP, TAB_RSQRT = 0, recip.size
    if sizes.tmem_words is not None and tmem.size > sizes.tmem_words:
        raise ModelTooLarge(f"the tables need {tmem.size} TMEM words; TMEM holds {sizes.tmem_words}")
    sigmem = np.asarray(c["table.sigmoid"], dtype=np.int64).copy()

    # ------------------------------------------------------------------ VMEM
    # The two streams of a VREC (i, f) start on different parities, and those of a VGLU (state,
    # acc_g; gate, up) two words apart modulo 4: VMEM is four banks by address modulo 4, and the
    # vector unit reads both streams in one cycle then (VREC), or two words of each (VGLU's
    # two-lane path; hw/core/vector_unit.py).
    va = _Alloc("vmem")

    def vput(name, n, residue):
        va.top += (residue - va.top) % 4        # unused words: start on the asked bank
        return va(name, n)
    H = va("h", d)
    S = [vput(f"state{n}", d, 0) for n in range(L)]
    I_, F_, G_ = vput("i", d, 0), vput("f", d, 1), vput("acc_g", d, 2)
    Z = va("z", max(d, d_ff))
    GATE = vput("gate", d_ff, 0)
    # up follows gate directly when one GEMV writes both (d_ff not a multiple of rows)
    UP = vput("up", d_ff, 2) if d_ff % rows == 0 else va("up", d_ff)
    LOG = va("logits", V)
    vmem_words = va.top
    if sizes.vmem_words is not None and vmem_words > sizes.vmem_words:
        raise ModelTooLarge(f"the program needs {vmem_words} VMEM words; VMEM holds {sizes.vmem_words}")
    if vmem_words > _MAX_ADDR + 1:
        raise ModelTooLarge(f"{vmem_words} VMEM words: addresses have 20 bits")

    # ------------------------------------------------------------------ program
    prog: list[Instr] = []
    probes: list[tuple[int, str]] = []
    E = prog.append
    bank = [0]
    h_bits = fm["h_bits"]
    for n in list(range(L)):
        for lin in ("attn.o_proj", "mlp.down_proj"):
            if int(c[f"model.layers.{n}.{lin}.out_bits"]) != h_bits:
                raise ValueError(f"{lin} must write the residual format ({h_bits} bits) for the in-place residual add")

    def consumer(lin, z, k, m_reg, dst, m_out, out_frac, out_bits, raw=False, track=0, split=None,
                 residual=False, after_vq=None):
        """Codes of one consumer into the next activation bank, its output scale, its GEMV(s).
        ``after_vq`` emits scalar instructions that the output scale needs but the codes do not
        (the group's rsqrt): placed after VQ, they run while it runs."""
        b = bank[0]
        bank[0] ^= 1
        E(Instr(Op.SMANT16, rd=R_MN, rc=R_T, ra=m_reg, comment=f"{lin}: mn, t of max|u|"))
        E(Instr(Op.SRECIP, rd=R_RQ, ra=R_MN, imm=TAB_RECIP))
        E(Instr(Op.SMULI, rd=R_RQ, ra=R_RQ, imm=127))
        E(Instr(Op.SRSHI, rd=R_RQ, ra=R_RQ, imm=7, comment="Rq"))
        E(Instr(Op.VQ, a0=b, a1=z, a2=cm[f"{lin}.wc"], rb=R_SZ, rc=R_T, ra=R_RQ, n=k, comment=f"{lin} codes"))
        if after_vq is not None:
            after_vq()
        if not raw:
            cmant, cexp = int(c[f"{lin}.scale_mant"]), int(c[f"{lin}.scale_exp"])
            E(Instr(Op.SMUL, rd=R_P, ra=R_MN, rb=R_Q))
            E(Instr(Op.SNORM, rd=R_PM, rc=R_PE, ra=R_P))
            E(Instr(Op.SMULI, rd=R_P, ra=R_PM, imm=cmant))
            E(Instr(Op.SNORM, rd=R_SM, rc=R_SE, ra=R_P))
            E(Instr(Op.SADD, rd=R_SE, ra=R_SE, rb=R_PE, imm=cexp - 23))
            E(Instr(Op.SADD, rd=R_SE, ra=R_SE, rb=R_T))
            E(Instr(Op.SRSHI, rd=R_K2, ra=R_K, imm=1))
            E(Instr(Op.SSUB, rd=R_SE, ra=R_SE, rb=R_K2))
            E(Instr(Op.SSUB, rd=R_SH, ra=0, rb=R_SE, imm=-out_frac))
            E(Instr(Op.SMAXI, rd=R_SH, ra=R_SH, imm=-24))
            E(Instr(Op.SZSEL, rd=R_SM, ra=R_SS, rb=m_reg, rc=R_SM, comment=f"{lin} scale (0 for a zero input)"))
        slot = weights.slots[lin]
        if split is None:
            E(Instr(Op.GEMV, a0=dst, n=m_out, a1=slot.base, a2=slot.groups,
                    imm=gemv_imm(slot.chunks, b, raw, residual, chain=True), ra=R_SM, rb=R_SH, sat=0 if raw else out_bits,
                    rd=track, comment=lin + (" (added to the residual)" if residual else "")))
        else:  # gate and up halves as two commands (same codes, same scale)
            (dg, tg), (du, tu) = split
            half = m_out // rows
            E(Instr(Op.GEMV, a0=dg, n=m_out, a1=slot.base, a2=half, imm=gemv_imm(slot.chunks, b, chain=True),
                    ra=R_SM, rb=R_SH, sat=out_bits, rd=tg, comment=lin + " (gate)"))
            E(Instr(Op.GEMV, a0=du, n=m_out, a1=slot.base + half * slot.chunks, a2=slot.groups - half,
                    imm=gemv_imm(slot.chunks, b), ra=R_SM, rb=R_SH, sat=out_bits, rd=tu, comment=lin + " (up)"))

    def group_pass(z, k, zmax_reg, wp, wcs):
        """Block shift, sum of squares and the max|z' wc| of each consumer (NQL pass A)."""
        E(Instr(Op.SBLEN, rd=R_SZ, ra=zmax_reg, imm=-16, comment="block shift sz"))
        E(Instr(Op.VNQA, rd=R_SS, rc=R_M[0], a1=z, a2=wp, a0=wcs[0], rb=R_SZ, n=k, comment="sum of squares, max|u|"))

    def more_maxima(z, k, wcs):
        """max|z' wc| of the second and third consumer (runs while the first one's GEMV runs)."""
        E(Instr(Op.VUMAX2, rd=R_M[1], rc=R_M[2] if len(wcs) > 2 else 0, a1=z, a2=wcs[1],
                a0=wcs[2] if len(wcs) > 2 else 0, rb=R_SZ, n=k))

    def rsq():
        E(Instr(Op.SRSQ, rd=R_Q, rc=R_K, ra=R_SS, imm=TAB_RSQRT, comment="q, k = rsqrt(ss)"))

    def placed(emit):
        """``emit`` for the next consumer's ``after_vq``, or emitted here (``rsqrt_after_vq`` off)."""
        if rsqrt_after_vq:
            return emit
        emit()
        return None

    # embedding
    E(Instr(Op.SLDC, rd=R_ESH, ra=REG_TOKEN, imm=EMBSH, comment="embedding shift"))
    E(Instr(Op.SMULI, rd=R_EROW, ra=REG_TOKEN, imm=d))
    E(Instr(Op.SADD, rd=R_EROW, ra=R_EROW, rb=0, imm=EMB, comment="embedding row"))
    E(Instr(Op.VEMB, a0=H, n=d, ra=R_EROW, rb=R_ESH, sat=h_bits, rd=R_HMAX, comment="h = embedding"))
    probes.append((len(prog) - 1, "h0"))
    for n in range(L):
        p = f"model.layers.{n}."
        fi, ff = int(c[p + "attn.i_proj.out_frac"]), int(c[p + "attn.f_proj.out_frac"])
        s_frac = int(c[p + "state_frac"])
        # token mixer
        wcs = [cm[p + "attn.i_proj.wc"], cm[p + "attn.f_proj.wc"], cm[p + "attn.g_proj.wc"]]
        group_pass(H, d, R_HMAX, cm[p + "attn_in.wp"], wcs)
        for lin, mreg, dst, raw in (("attn.i_proj", R_M[0], I_, False), ("attn.f_proj", R_M[1], F_, False),
                                    ("attn.g_proj", R_M[2], G_, True)):
            consumer(p + lin, H, d, mreg, dst, d, int(c[f"{p}{lin}.out_frac"]), int(c[f"{p}{lin}.out_bits"]), raw=raw,
                     after_vq=placed(rsq) if lin == "attn.i_proj" else None)
            if lin == "attn.i_proj":
                more_maxima(H, d, wcs)
        E(Instr(Op.SLI, rd=R_FI, imm=fi))
        E(Instr(Op.SLI, rd=R_FF, imm=ff))
        E(Instr(Op.SLI, rd=R_CS, imm=fi + 16 - s_frac))
        E(Instr(Op.SYNC, imm=1, comment="i, f written (g may still run)"))
        E(Instr(Op.VREC, a0=S[n], a1=I_, a2=F_, imm=cm[p + "om_lb"], ra=R_FI, rb=R_FF, rc=R_CS, rd=R_SMAX, n=d,
                comment=f"state{n} = s + om (silu(i) - s)"))
        E(Instr(Op.SBLEN, rd=R_YSH, ra=R_SMAX, imm=-16))
        E(Instr(Op.SLI, rd=R_T0, imm=s_frac))
        E(Instr(Op.VGLU, a0=Z, a1=S[n], a2=G_, ra=R_T0, rb=R_YSH, rd=R_ZMAX, n=d, imm=1,
                comment="z = silu_block(s) acc_g, chained on g's GEMV"))
        group_pass(Z, d, R_ZMAX, cm[p + "attn.o_in.wp"], [cm[p + "attn.o_proj.wc"]])
        # h_mid = h + o in the GEMV's writeback, in place (o and down write the residual format)
        consumer(p + "attn.o_proj", Z, d, R_M[0], H, d, int(c[p + "attn.o_proj.out_frac"]), h_bits,
                 residual=True, track=R_HMAX, after_vq=placed(rsq))
        E(Instr(Op.SYNC, comment="h_mid written"))
        # channel mixer
        fgu, gbits = int(c[p + "mlp.gate_proj.out_frac"]), int(c[p + "mlp.gate_proj.out_bits"])
        group_pass(H, d, R_HMAX, cm[p + "mlp_in.wp"], [cm[p + "mlp.gate_proj.wc"]])
        if d_ff % rows == 0:
            consumer(p + "mlp.gate_proj", H, d, R_M[0], GATE, d_ff, fgu, gbits,
                     split=((GATE, R_GMAX), (UP, 0)), after_vq=placed(rsq))
            E(Instr(Op.SYNC, imm=1, comment="gate written (up may still run)"))
            chain = 1
        else:
            consumer(p + "mlp.gate_proj", H, d, R_M[0], GATE, 2 * d_ff, fgu, gbits, after_vq=placed(rsq))
            E(Instr(Op.SYNC))
            E(Instr(Op.VMAXABS, rd=R_GMAX, a1=GATE, n=d_ff))
            chain = 0
        E(Instr(Op.SBLEN, rd=R_YSH, ra=R_GMAX, imm=-16))
        E(Instr(Op.SLI, rd=R_T0, imm=fgu))
        E(Instr(Op.VGLU, a0=Z, a1=GATE, a2=UP, ra=R_T0, rb=R_YSH, rd=R_ZMAX, n=d_ff, imm=chain,
                comment="z = silu_block(gate) up" + (", chained on up's GEMV" if chain else "")))
        group_pass(Z, d_ff, R_ZMAX, cm[p + "mlp.down_in.wp"], [cm[p + "mlp.down_proj.wc"]])
        eps_mant = int(c.get(p + "mlp.down_in.eps_mant", 0))

        def eps_rsq(eps_mant=eps_mant, fgu=fgu, p=p):
            if eps_mant:
                eps_exp = int(c[p + "mlp.down_in.eps_exp"])
                # ss += round_shift(eps_mant, max(2 sz - 2 z_frac - eps_exp, -33)), z_frac = 2 f_gu - ysh
                E(Instr(Op.SADD, rd=R_T0, ra=R_SZ, rb=R_YSH))
                E(Instr(Op.SADD, rd=R_T0, ra=R_T0, rb=R_T0, imm=-4 * fgu - eps_exp))
                E(Instr(Op.SMAXI, rd=R_T0, ra=R_T0, imm=-33))
                E(Instr(Op.SLI, rd=R_T1, imm=eps_mant))
                E(Instr(Op.SRSHR, rd=R_T1, ra=R_T1, rb=R_T0))
                E(Instr(Op.SADD, rd=R_SS, ra=R_SS, rb=R_T1, comment="ss += eps"))
            rsq()
        consumer(p + "mlp.down_proj", Z, d_ff, R_M[0], H, d, int(c[p + "mlp.down_proj.out_frac"]), h_bits,
                 residual=True, track=R_HMAX, after_vq=placed(eps_rsq))
        E(Instr(Op.SYNC, comment=f"h after layer {n} written"))
        probes.append((len(prog) - 1, f"h{n + 1}"))
    # LM head
    group_pass(H, d, R_HMAX, cm["model.final_in.wp"], [cm["lm_head.wc"]])
    consumer("lm_head", H, d, R_M[0], LOG, V, int(c["lm_head.out_frac"]), int(c["lm_head.out_bits"]),
             after_vq=placed(rsq))
    E(Instr(Op.SYNC))
    E(Instr(Op.VARGMAX, rd=REG_NEXT, a1=LOG, n=V, comment="next token"))
    E(Instr(Op.HALT))

    reset = [Instr(Op.VSET, a0=S[n], n=d, imm=0, comment=f"state{n} = 0") for n in range(L)] + [Instr(Op.HALT)]
    if sizes.prog_words is not None and len(prog) + len(reset) > sizes.prog_words:
        raise ModelTooLarge(f"the program has {len(prog) + len(reset)} instructions; PMEM holds {sizes.prog_words}")
    return CompiledModel(d, L, V, d_ff, lanes, rows, fmt, prog, reset, weights, cmem, tmem, sigmem, vmem_words,
                         va.map, ca.map, tmem_map, probes, macs)


def main(argv=None) -> int:
    """``python -m sw.program``: compile a checkpoint and print its memory summary and program."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m sw.program", description=main.__doc__)
    ap.add_argument("--checkpoint", default="models/checkpoints/mmfree-tiny.safetensors")
    ap.add_argument("--lanes", type=int, default=32)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--fmt", default="trits5", choices=["2bit", "trits5"])
    ap.add_argument("--no-listing", action="store_true", help="summary only")
    args = ap.parse_args(argv)
    cm = compile_model(args.checkpoint, args.lanes, args.rows, args.fmt)
    print(json.dumps(cm.summary(), indent=1))
    if not args.no_listing:
        for pc, ins in enumerate(cm.program):
            print(f"{pc:4d}  {ins}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
