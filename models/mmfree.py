"""Float golden model of the MatMul-free language model (HGRN-Bit), as its reference code computes.

Equations (SPEC section 1; the reference code ``mmfreelm.HGRNBitForCausalLM``, not the paper
figure)::

    h   = Embedding[token]                                full precision
    lb  = softmax(lower_bounds, dim=0); lb = cumsum(lb) - lb[0]      (L x d)
    per layer l:
        x   = RMSNorm_attn(h)
        f   = sigmoid(BL_f(x));  if l > 0: f = lb[l] + (1 - lb[l]) * f
        c   = SiLU(BL_i(x)) * (1 - f)
        s_l = f * s_l + c                                 one d-vector of state per layer
        h   = h + BL_o(RMSNorm_g(BL_g(x)) * SiLU(s_l))
        gate, up = split(BL_gu(RMSNorm_mlp(h)), 2)        first half is the gate
        h   = h + BL_down(SiLU(gate) * up)
    logits = BL_head(RMSNorm_final(h))

``BitLinear`` (every projection, LM head included): own RMSNorm, per-token int8 absmax
activations, absmean ternary weights, one rescale per output::

    x_q, a    = act_quant_int8(RMSNorm_w(x))
    W_t, beta = ternary_quant(W)
    y         = (x_q @ W_t^T) * ((a / 127) * beta)

The integer product ``x_q @ W_t^T`` is computed in float32 and is exact (|acc| <= 127 K < 2^24),
so a frozen model built from a checkpoint reproduces the exporting model bit for bit.

Two evaluation modes share the same weights: :meth:`MMFreeLM.forward` (parallel over a sequence;
the recurrence is a loop over time with the same element-wise operations as the recurrent mode)
and :meth:`MMFreeLM.step` (recurrent, one token per call, constant cost per token).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .quant import act_quant_int8_ste, ternary_quant_ste

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import Checkpoint

__all__ = [
    "RMSNorm",
    "BitLinear",
    "recurrence_step",
    "HGRNBitAttention",
    "HGRNBitMLP",
    "HGRNBitBlock",
    "HGRNBitModel",
    "MMFreeLM",
]


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned per-channel weight.

    ``y = x / sqrt(mean(x^2) + eps) * weight`` over the last dimension.
    """

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class BitLinear(nn.Module):
    """RMSNorm followed by a ternary (or, with ``quantize=False``, float) linear map. No bias.

    Parameters
    ----------
    in_features, out_features : int
        Matrix shape is ``(out_features, in_features)``.
    eps : float
        Epsilon of the BitLinear's own RMSNorm.
    quantize : bool
        ``True``: ternary weights and int8 activations with straight-through gradients.
        ``False``: ``linear(RMSNorm(x), W)`` in float.

    Notes
    -----
    In training mode ``weight`` is the latent float matrix and is ternarised on every call.
    After :meth:`freeze` it holds the ternary values themselves and the buffer ``beta`` holds
    the scale of the latent matrix it came from (ternary weights are not re-quantised: that is
    not idempotent).
    """

    def __init__(self, in_features: int, out_features: int, eps: float = 1e-6, quantize: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.quantize = quantize
        self.frozen = False
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.norm = RMSNorm(in_features, eps)
        nn.init.normal_(self.weight, std=0.02)

    def freeze(self, w_t: torch.Tensor, beta: torch.Tensor) -> None:
        """Switch to inference with stored ternary weights ``w_t`` and stored scale ``beta``."""
        if not self.quantize:
            raise ValueError("only a ternary BitLinear can be frozen")
        w_t = torch.as_tensor(w_t)
        if tuple(w_t.shape) != (self.out_features, self.in_features):
            raise ValueError(f"ternary weight shape {tuple(w_t.shape)} != {(self.out_features, self.in_features)}")
        with torch.no_grad():
            self.weight.data = w_t.to(torch.float32).clone()
        self.weight.requires_grad_(False)
        self.register_buffer("beta", torch.as_tensor(beta, dtype=torch.float32).reshape(1).clone())
        self.frozen = True

    def ternary(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(W_t, beta)`` as used by the forward pass (``beta`` 0-d, both detached)."""
        if not self.quantize:
            raise ValueError("a float BitLinear has no ternary weights")
        if self.frozen:
            return self.weight.detach(), self.beta.detach().reshape(())
        w_t, beta = ternary_quant_ste(self.weight.detach())
        return w_t, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x_n = self.norm(x)
        if not self.quantize:
            return F.linear(x_n, self.weight)
        if self.frozen:
            w_t, beta = self.weight, self.beta.reshape(())
        else:
            w_t, beta = ternary_quant_ste(self.weight)
        x_q, a = act_quant_int8_ste(x_n)
        acc = F.linear(x_q, w_t)
        return acc * ((a / 127.0) * beta)

    def extra_repr(self) -> str:  # noqa: D102
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"quantize={self.quantize}, frozen={self.frozen}")


def recurrence_step(f: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One step of the element-wise linear recurrence ``s_t = f_t * s_{t-1} + c_t``."""
    return f * s + c


class _LinearRecurrence(torch.autograd.Function):
    """``s_t = f_t * s_{t-1} + c_t`` over ``T`` (dim 1), as a loop with a hand-written backward.

    The forward pass applies :func:`recurrence_step` once per time step, exactly as the recurrent
    mode does, so both modes produce the same floats. Backward: ``ds_t = g_t + f_{t+1} ds_{t+1}``,
    ``dc_t = ds_t``, ``df_t = ds_t s_{t-1}``, ``ds_0 = f_1 ds_1``.
    """

    @staticmethod
    def forward(ctx, f, c, s0):  # noqa: D102
        out = torch.empty_like(c)
        s = s0
        for t in range(c.shape[1]):
            s = recurrence_step(f[:, t], c[:, t], s)
            out[:, t] = s
        ctx.save_for_backward(f, out, s0)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        f, out, s0 = ctx.saved_tensors
        T = out.shape[1]
        d_state = torch.empty_like(out)
        carry = torch.zeros_like(s0)
        for t in range(T - 1, -1, -1):
            carry = grad[:, t] + carry
            d_state[:, t] = carry
            carry = carry * f[:, t]
        prev = torch.cat([s0[:, None], out[:, :-1]], dim=1)
        return d_state * prev, d_state, carry


class HGRNBitAttention(nn.Module):
    """MLGRU token mixer: gated linear recurrence with one d-vector of state."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        d, eps, q = config.d_model, config.eps, config.quantize
        self.layer_idx = layer_idx
        self.i_proj = BitLinear(d, d, eps, q)
        self.f_proj = BitLinear(d, d, eps, q)
        self.g_proj = BitLinear(d, d, eps, q)
        self.g_norm = RMSNorm(d, eps)
        self.o_proj = BitLinear(d, d, eps, q)

    def _gates(self, x: torch.Tensor, lower_bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.sigmoid(self.f_proj(x))
        if self.layer_idx > 0:
            f = lower_bound + (1 - lower_bound) * f
        c = F.silu(self.i_proj(x)) * (1 - f)
        return f, c

    def _output(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.o_proj(self.g_norm(self.g_proj(x)) * F.silu(s))

    def forward(self, x: torch.Tensor, lower_bound: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel mode. ``x`` is ``(B, T, d)``, ``state`` ``(B, d)``; returns ``(o, last_state)``."""
        f, c = self._gates(x, lower_bound)
        states = _LinearRecurrence.apply(f, c, state)
        return self._output(x, states), states[:, -1]

    def step(self, x: torch.Tensor, lower_bound: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent mode. ``x`` is ``(B, d)``; returns ``(o, new_state)``."""
        f, c = self._gates(x, lower_bound)
        s = recurrence_step(f, c, state)
        return self._output(x, s), s


class HGRNBitMLP(nn.Module):
    """GLU channel mixer: one ``d -> 2I`` projection split into [gate, up], then ``I -> d``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d, i, eps, q = config.d_model, config.d_ff, config.eps, config.quantize
        self.d_ff = i
        self.gate_proj = BitLinear(d, 2 * i, eps, q)
        self.down_proj = BitLinear(i, d, eps, q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        gate, up = self.gate_proj(x).split(self.d_ff, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class HGRNBitBlock(nn.Module):
    """Pre-norm block: token mixer then channel mixer, each with a residual connection."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.eps)
        self.attn = HGRNBitAttention(config, layer_idx)
        self.mlp_norm = RMSNorm(config.d_model, config.eps)
        self.mlp = HGRNBitMLP(config)

    def forward(self, h, lower_bound, state):  # noqa: D102
        o, state = self.attn(self.attn_norm(h), lower_bound, state)
        h = h + o
        h = h + self.mlp(self.mlp_norm(h))
        return h, state

    def step(self, h, lower_bound, state):  # noqa: D102
        o, state = self.attn.step(self.attn_norm(h), lower_bound, state)
        h = h + o
        h = h + self.mlp(self.mlp_norm(h))
        return h, state


class HGRNBitModel(nn.Module):
    """Embedding, blocks and final norm (the ``model.`` prefix of the reference keys)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.lower_bounds = nn.Parameter(torch.zeros(config.n_layers, config.d_model))
        self.layers = nn.ModuleList([HGRNBitBlock(config, i) for i in range(config.n_layers)])
        self.norm = RMSNorm(config.d_model, config.eps)

    def layer_lower_bounds(self) -> torch.Tensor:
        """Per-layer forget-gate lower bounds ``cumsum(softmax(lb, 0)) - softmax(lb, 0)[0]``."""
        lb = self.lower_bounds.softmax(dim=0)
        return lb.cumsum(dim=0) - lb[0]


class MMFreeLM(nn.Module):
    """HGRN-Bit causal language model with the reference parameter names.

    Parameters
    ----------
    config : ModelConfig
        Model shape; ``config.quantize`` selects ternary BitLinears or float linears.

    Notes
    -----
    ``state_dict()`` keys equal the reference ``HGRNBitForCausalLM`` keys (latent weights).
    A model built by :meth:`from_checkpoint` is frozen: its BitLinears hold the stored ternary
    weights and additionally have a ``beta`` buffer.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = HGRNBitModel(config)
        self.lm_head = BitLinear(config.d_model, config.vocab_size, config.eps, config.quantize)

    # ------------------------------------------------------------------ helpers
    def bitlinears(self) -> Iterator[tuple[str, BitLinear]]:
        """Yield ``(name, module)`` for every BitLinear, in state-dict order."""
        for name, module in self.named_modules():
            if isinstance(module, BitLinear):
                yield name, module

    @property
    def frozen(self) -> bool:
        """Whether the BitLinears hold stored ternary weights (inference only)."""
        return any(m.frozen for _, m in self.bitlinears())

    def init_state(self, batch: int) -> list[torch.Tensor]:
        """Zero recurrent state: one ``(batch, d)`` tensor per layer."""
        p = self.model.embeddings.weight
        return [torch.zeros(batch, self.config.d_model, dtype=p.dtype, device=p.device)
                for _ in range(self.config.n_layers)]

    # ------------------------------------------------------------------ modes
    def forward(self, tokens: torch.Tensor, state: list[torch.Tensor] | None = None,
                return_hidden: bool = False, return_state: bool = False):
        """Parallel (sequence) mode.

        Parameters
        ----------
        tokens : torch.Tensor
            ``(B, T)`` integer token ids.
        state : list of torch.Tensor, optional
            Initial per-layer state (default zeros).
        return_hidden : bool
            Also return the residual stream ``h`` after the embedding and after every layer
            (``L + 1`` tensors of shape ``(B, T, d)``).
        return_state : bool
            Also return the per-layer state after the last token.

        Returns
        -------
        logits : torch.Tensor
            ``(B, T, vocab_size)``; followed by ``hidden`` and/or ``state`` when requested.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
        if state is None:
            state = self.init_state(tokens.shape[0])
        h = self.model.embeddings(tokens)
        lbs = self.model.layer_lower_bounds()
        hidden = [h]
        new_state = []
        for l, layer in enumerate(self.model.layers):
            h, s = layer(h, lbs[l], state[l])
            new_state.append(s)
            hidden.append(h)
        logits = self.lm_head(self.model.norm(h))
        out = (logits,)
        if return_hidden:
            out += (hidden,)
        if return_state:
            out += (new_state,)
        return out[0] if len(out) == 1 else out

    def step(self, tokens: torch.Tensor, state: list[torch.Tensor], return_hidden: bool = False):
        """Recurrent mode: one token per sequence.

        Parameters
        ----------
        tokens : torch.Tensor
            ``(B,)`` integer token ids.
        state : list of torch.Tensor
            Per-layer state from :meth:`init_state` or a previous call (not modified).
        return_hidden : bool
            Also return the residual stream after the embedding and after every layer
            (``L + 1`` tensors of shape ``(B, d)``).

        Returns
        -------
        logits : torch.Tensor
            ``(B, vocab_size)``.
        new_state : list of torch.Tensor
        hidden : list of torch.Tensor
            Only with ``return_hidden=True``.
        """
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be (B,), got shape {tuple(tokens.shape)}")
        h = self.model.embeddings(tokens)
        lbs = self.model.layer_lower_bounds()
        hidden = [h]
        new_state = []
        for l, layer in enumerate(self.model.layers):
            h, s = layer.step(h, lbs[l], state[l])
            new_state.append(s)
            hidden.append(h)
        logits = self.lm_head(self.model.norm(h))
        if return_hidden:
            return logits, new_state, hidden
        return logits, new_state

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_checkpoint(cls, ckpt: "Checkpoint | str | Path") -> "MMFreeLM":
        """Build an inference model from a checkpoint (or a path to one).

        For a ternary checkpoint every BitLinear is frozen with the STORED ternary weights and
        the STORED beta; nothing is re-quantised. A float checkpoint gives a float model.
        The model is returned in eval mode with ``requires_grad`` off.
        """
        from .checkpoint import Checkpoint, load_checkpoint

        if not isinstance(ckpt, Checkpoint):
            ckpt = load_checkpoint(ckpt)
        model = cls(ckpt.config)
        bl_names = {name for name, _ in model.bitlinears()}
        with torch.no_grad():
            for name, module in model.bitlinears():
                if ckpt.config.quantize:
                    module.freeze(torch.from_numpy(ckpt.tensors[f"{name}.weight"].astype("float32")),
                                  torch.from_numpy(ckpt.tensors[f"{name}.beta"]))
            params = dict(model.named_parameters())
            for key, value in ckpt.tensors.items():
                if key.endswith(".beta") and key[: -len(".beta")] in bl_names:
                    continue
                if ckpt.config.quantize and key.endswith(".weight") and key[: -len(".weight")] in bl_names:
                    continue
                params[key].data.copy_(torch.from_numpy(value.astype("float32")))
        model.requires_grad_(False)
        model.eval()
        return model
