"""Quantisers of the ternary MatMul-free model.

One rounding rule is used by every quantiser in the project: round half away from zero
(:func:`round_half_away`), as the reference kernels do. ``torch.round`` rounds half to even and
is never used for quantisation.

Definitions (SPEC section 1, BitLinear):

- activations, per token (last dimension): ``a = max(max|x|, 1e-5)``,
  ``x_q = clamp(round_half_away(x * 127 / a), -128, 127)``; ``x ~= x_q * a / 127``.
  ``x * 127 / a`` is evaluated left to right: ``(x * 127) / a``.
- weights, whole matrix: ``beta = max(mean|W|, 1e-5)``,
  ``W_t = clamp(round_half_away(W / beta), -1, 1)``; ``W ~= W_t * beta``.

The ``*_ste`` variants return the same values but pass gradients straight through the rounding
and clamping (identity), with the scales ``a`` and ``beta`` treated as constants, so that
``d/dx [(W_t @ x_q) * a/127 * beta] = W_t * beta`` and ``d/dW [...] = x_q * a/127`` as in the
reference quantisation-aware training.
"""

from __future__ import annotations

import torch

__all__ = [
    "ACT_SCALE_FLOOR",
    "WEIGHT_SCALE_FLOOR",
    "round_half_away",
    "ternary_quant",
    "act_quant_int8",
    "round_half_away_ste",
    "ternary_quant_ste",
    "act_quant_int8_ste",
]

#: Floor of the per-token activation scale ``a``.
ACT_SCALE_FLOOR = 1e-5
#: Floor of the per-matrix weight scale ``beta``.
WEIGHT_SCALE_FLOOR = 1e-5


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, ties away from zero (0.5 -> 1, -2.5 -> -3).

    Exact for every finite float: ``x - trunc(x)`` is computed without rounding error, so values
    just below a tie (e.g. the float right under 0.5) are never pushed over it, as
    ``floor(x + 0.5)`` would do.

    Parameters
    ----------
    x : torch.Tensor
        Floating-point tensor.

    Returns
    -------
    torch.Tensor
        New tensor of the same dtype and shape holding integer values.
    """
    t = torch.trunc(x)
    away = (x - t).abs_() >= 0.5
    return t.add_(torch.sign(x).mul_(away))


class _RoundHalfAwaySTE(torch.autograd.Function):
    """Round half away from zero in the forward pass, identity in the backward pass."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return round_half_away(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad


class _ScaledRoundClampSTE(torch.autograd.Function):
    """``clamp(round_half_away(x * num / den), lo, hi)``; backward ``grad * num / den``.

    ``den`` is treated as a constant (no gradient), as in the reference quantisation-aware
    training where scales are detached.
    """

    @staticmethod
    def forward(ctx, x, num, den, lo, hi):  # noqa: D102
        ctx.save_for_backward(den)
        ctx.num = num
        y = x * num if num != 1.0 else x.clone()
        return round_half_away(y.div_(den)).clamp_(lo, hi)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (den,) = ctx.saved_tensors
        g = grad * ctx.num if ctx.num != 1.0 else grad
        return g / den, None, None, None, None


def round_half_away_ste(x: torch.Tensor) -> torch.Tensor:
    """:func:`round_half_away` with a straight-through (identity) gradient."""
    return _RoundHalfAwaySTE.apply(x)


def _weight_scale(w: torch.Tensor) -> torch.Tensor:
    return w.abs().mean().clamp(min=WEIGHT_SCALE_FLOOR)


def _act_scale(x: torch.Tensor) -> torch.Tensor:
    return x.abs().amax(dim=-1, keepdim=True).clamp(min=ACT_SCALE_FLOOR)


def ternary_quant(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary quantisation of a whole weight matrix.

    Parameters
    ----------
    w : torch.Tensor
        Latent float weight matrix ``(out, in)``.

    Returns
    -------
    w_t : torch.Tensor
        Ternary values in {-1, 0, +1}, same dtype and shape as ``w``
        (convert with ``.to(torch.int8)`` for storage).
    beta : torch.Tensor
        0-d tensor, ``max(mean|W|, 1e-5)``.
    """
    with torch.no_grad():
        beta = _weight_scale(w)
        w_t = round_half_away(w / beta).clamp(-1, 1)
    return w_t, beta


def ternary_quant_ste(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ternary_quant` with gradients: ``dW_t/dW = 1/beta`` (beta held constant).

    The returned ``beta`` is detached.
    """
    beta = _weight_scale(w.detach())
    return _ScaledRoundClampSTE.apply(w, 1.0, beta, -1.0, 1.0), beta


def act_quant_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8 quantisation over the last dimension.

    Parameters
    ----------
    x : torch.Tensor
        Activations ``(..., n)``.

    Returns
    -------
    x_q : torch.Tensor
        Integer values in [-127, 127] (-128 cannot occur), same dtype and shape as ``x``.
    a : torch.Tensor
        Per-token scale ``max(max|x|, 1e-5)``, shape ``(..., 1)``; ``x ~= x_q * a / 127``.
    """
    with torch.no_grad():
        a = _act_scale(x)
        x_q = round_half_away(x * 127.0 / a).clamp(-128, 127)
    return x_q, a


def act_quant_int8_ste(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`act_quant_int8` with gradients: ``dx_q/dx = 127/a`` (``a`` held constant).

    The returned ``a`` is detached.
    """
    a = _act_scale(x.detach())
    return _ScaledRoundClampSTE.apply(x, 127.0, a, -128.0, 127.0), a
