"""Memory layout of a ternary matrix for the GEMV engine (:class:`hw.gemv.GemvEngine`).

The engine reads one weight word per cycle: ``rows`` output rows x ``lanes`` inputs, each row
packed by :mod:`sw.packing`. A matrix of shape (M, K) becomes ``ceil(M / rows)`` row groups of
``ceil(K / lanes)`` chunks, stored group after group, chunk after chunk::

    word[g * chunks + c] = concat over r in 0..rows-1 of pack(W[g*rows + r, c*lanes:(c+1)*lanes])

row ``r`` in bits ``[r * row_bits, (r + 1) * row_bits)``. Rows and columns beyond the matrix are
zero weights, so padded outputs are 0 and padded inputs contribute nothing.
"""

import numpy as np

from .packing import check_ternary, pack, packed_len, to_int

__all__ = ["row_bits", "gemv_chunks", "gemv_weight_words", "act_words"]


def row_bits(lanes: int, fmt: str) -> int:
    """Bits of one row of one chunk: ``lanes`` weights packed in ``fmt``."""
    return 8 * packed_len(lanes, fmt)


def gemv_chunks(m: int, k: int, lanes: int, rows: int) -> tuple[int, int]:
    """(row groups, chunks per group) for an (m, k) matrix."""
    return -(-m // rows), -(-k // lanes)


def gemv_weight_words(w, lanes: int, rows: int, fmt: str = "2bit") -> list[int]:
    """Weight words for ``w`` (ternary, shape (M, K)) in the engine's order.

    Raises
    ------
    ValueError
        If ``w`` is not a 2-D ternary matrix.
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {w.shape}")
    check_ternary(w.reshape(-1))
    m, k = w.shape
    groups, chunks = gemv_chunks(m, k, lanes, rows)
    padded = np.zeros((groups * rows, chunks * lanes), dtype=np.int8)
    padded[:m, :k] = w
    rb = row_bits(lanes, fmt)
    words = []
    for g in range(groups):
        for c in range(chunks):
            word = 0
            for r in range(rows):
                seg = padded[g * rows + r, c * lanes:(c + 1) * lanes]
                word |= to_int(pack(seg, fmt)) << (r * rb)
            words.append(word)
    return words


def act_words(x_q, lanes: int) -> list[int]:
    """int8 activation vector as activation-buffer words (lane j in bits 8j..8j+7), zero-padded."""
    x = np.asarray(x_q, dtype=np.int64)
    if x.ndim != 1 or x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError("activations must be a 1-D vector of int8 values")
    chunks = -(-x.size // lanes)
    padded = np.zeros(chunks * lanes, dtype=np.int64)
    padded[:x.size] = x
    return [int.from_bytes((padded[c * lanes:(c + 1) * lanes] & 0xFF).astype(np.uint8).tobytes(), "little")
            for c in range(chunks)]
