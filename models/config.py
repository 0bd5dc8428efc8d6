"""Model shape of the MatMul-free language model (HGRN-Bit).

The configuration is the single description of a model's shape. It travels inside every
checkpoint (as JSON in the safetensors metadata) so that a checkpoint alone is enough to
rebuild the model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelConfig", "glu_hidden_size"]


def glu_hidden_size(d_model: int) -> int:
    """Hidden size ``I`` of the GLU channel mixer for a residual width ``d_model``.

    Follows the reference code: ``I = 256 * ceil(int(d * 4 * 2/3) / 256)``.

    Parameters
    ----------
    d_model : int
        Residual-stream width ``d``.

    Returns
    -------
    int
        The intermediate size ``I`` (a multiple of 256).
    """
    return 256 * math.ceil(int(d_model * 4 * 2 / 3) / 256)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of an HGRN-Bit causal language model.

    Parameters
    ----------
    vocab_size : int
        Number of tokens; 256 for the byte-level models of this project.
    d_model : int
        Residual-stream width ``d`` (also the recurrent state size per layer).
    n_layers : int
        Number of blocks ``L``.
    eps : float
        Epsilon of every RMSNorm, including the one inside each BitLinear.
    quantize : bool
        ``True``: every projection is a ternary BitLinear (int8 activations, absmean ternary
        weights, straight-through estimator in training). ``False``: plain float linear layers
        with the same RMSNorm in front (the non-ternary baseline of the same shape).
    """

    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 4
    eps: float = 1e-6
    quantize: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, not {value!r}")
        if not (isinstance(self.eps, float) and 0.0 < self.eps < 1.0):
            raise ValueError(f"ModelConfig.eps must be a float in (0, 1), not {self.eps!r}")
        if not isinstance(self.quantize, bool):
            raise ValueError(f"ModelConfig.quantize must be a bool, not {self.quantize!r}")

    @property
    def d_ff(self) -> int:
        """Hidden size ``I`` of the GLU channel mixer (see :func:`glu_hidden_size`)."""
        return glu_hidden_size(self.d_model)

    @property
    def ternary_weights_per_layer(self) -> int:
        """Weights of the BitLinears of one block: ``4 d^2 + 3 I d``."""
        d, i = self.d_model, self.d_ff
        return 4 * d * d + 3 * i * d

    @property
    def ternary_weights(self) -> int:
        """Weights of all BitLinears, LM head included: ``L (4 d^2 + 3 I d) + V d``."""
        return self.n_layers * self.ternary_weights_per_layer + self.vocab_size * self.d_model

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Build a configuration from :meth:`to_dict` output.

        Unknown keys raise ``ValueError``; missing keys take their defaults.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        kwargs = dict(data)
        if "eps" in kwargs:
            kwargs["eps"] = float(kwargs["eps"])
        return cls(**kwargs)
