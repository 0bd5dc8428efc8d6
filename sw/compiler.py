"""Model compiler, weights part: lay out every ternary matrix of a checkpoint for the GEMV engine.

All BitLinears of the model (in forward order, LM head last) go one after another into the
engine's weight memory in the layout of :mod:`sw.gemv_layout`. The result says where each matrix
starts and how many row groups and chunks the engine runs for it, which is what the sequencer's
GEMV instructions carry.
"""

from dataclasses import dataclass

import numpy as np

from .gemv_layout import gemv_chunks, gemv_weight_words, row_bits

__all__ = ["MatrixSlot", "WeightImage", "ModelTooLarge", "layout_weights"]


class ModelTooLarge(ValueError):
    """The model's weights (or a vector) do not fit the bitstream's memories."""


@dataclass(frozen=True)
class MatrixSlot:
    """Where one matrix lives in the weight memory and how the engine walks it."""

    name: str
    base: int
    groups: int
    chunks: int
    out_features: int
    in_features: int

    @property
    def words(self) -> int:
        return self.groups * self.chunks


@dataclass
class WeightImage:
    """The weight memory contents for one model."""

    lanes: int
    rows: int
    fmt: str
    words: list[int]
    slots: dict[str, MatrixSlot]

    @property
    def word_bits(self) -> int:
        return self.rows * row_bits(self.lanes, self.fmt)

    def word_bytes(self) -> np.ndarray:
        """The words as a (N, word_bits / 8) uint8 array, little-endian, for upload or files."""
        nb = self.word_bits // 8
        return np.frombuffer(b"".join(w.to_bytes(nb, "little") for w in self.words),
                             dtype=np.uint8).reshape(len(self.words), nb)


def layout_weights(matrices: dict[str, np.ndarray], lanes: int, rows: int, fmt: str = "2bit",
                   depth: int | None = None, k_max: int | None = None) -> WeightImage:
    """Lay out ``matrices`` (name -> ternary (M, K) array, in execution order).

    Parameters
    ----------
    depth : int, optional
        Weight memory depth in words; the image must fit.
    k_max : int, optional
        Longest input vector the engine takes.

    Raises
    ------
    ModelTooLarge
        If the image needs more words than ``depth`` or a matrix is wider than ``k_max``, with
        the sizes in the message.
    """
    words, slots = [], {}
    for name, w in matrices.items():
        m, k = np.shape(w)
        if k_max is not None and k > k_max:
            raise ModelTooLarge(f"{name} has {k} inputs; the engine takes at most {k_max}")
        groups, chunks = gemv_chunks(m, k, lanes, rows)
        slots[name] = MatrixSlot(name, len(words), groups, chunks, m, k)
        words.extend(gemv_weight_words(w, lanes, rows, fmt))
    if depth is not None and len(words) > depth:
        raise ModelTooLarge(f"the weights need {len(words)} words of {rows * row_bits(lanes, fmt)} bits; "
                            f"the weight memory holds {depth}")
    return WeightImage(lanes, rows, fmt, words, slots)
