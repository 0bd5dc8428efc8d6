"""Picking the next token on the host from the core's integer logits (numpy only).

The core's own choice is greedy: ``VARGMAX`` takes the largest logit, the lowest index on ties.
Sampling happens on the host: the runtime reads the logits the core left in VMEM, converts them
to float with the model's logit format (``logit * 2**-logit_frac``, as
``models.intref.IntRefModel.logits_float``) and draws from ``softmax(logits / temperature)``
in float64, keeping only the ``top_k`` largest logits when ``top_k > 0`` (every logit equal to
the k-th largest is kept), with a ``numpy.random.default_rng(seed)`` generator: the same seed
and the same logits give the same tokens.
"""

from __future__ import annotations

import numpy as np

__all__ = ["argmax_first", "Sampler"]


def argmax_first(logits) -> int:
    """Index of the largest value, the lowest index on ties (what ``VARGMAX`` computes)."""
    x = np.asarray(logits).reshape(-1)
    if x.size == 0:
        raise ValueError("no logits")
    return int(np.argmax(x))


class Sampler:
    """Next-token choice from integer logits.

    Parameters
    ----------
    temperature : float
        ``<= 0``: greedy (:func:`argmax_first`); otherwise the softmax temperature.
    top_k : int
        Keep only the ``top_k`` largest logits (0: all).
    seed : int
        Seed of the generator; a new :class:`Sampler` with the same seed repeats its choices.
    logit_frac : int
        Fraction bits of the integer logits (``format.logit_frac`` of the compiled model).
    """

    def __init__(self, temperature: float = 0.0, top_k: int = 0, seed: int = 0, logit_frac: int = 0):
        if not np.isfinite(temperature):
            raise ValueError("temperature must be finite")
        if top_k < 0:
            raise ValueError("top_k must be >= 0")
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.seed = int(seed)
        self.logit_frac = int(logit_frac)
        self.rng = np.random.default_rng(self.seed)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def to_float(self, logits) -> np.ndarray:
        """Integer logits as float64 (``logits * 2**-logit_frac``)."""
        return np.asarray(logits, dtype=np.float64).reshape(-1) * np.exp2(-self.logit_frac)

    def probabilities(self, logits) -> np.ndarray:
        """The distribution a token is drawn from (float64, sums to 1)."""
        z = self.to_float(logits) / self.temperature
        if 0 < self.top_k < z.size:
            kth = np.sort(z)[-self.top_k]
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max())
        return p / p.sum()

    def __call__(self, logits) -> int:
        """The next token for ``logits`` (1-D integer array)."""
        if self.greedy:
            return argmax_first(logits)
        p = self.probabilities(logits)
        return int(self.rng.choice(p.size, p=p))
