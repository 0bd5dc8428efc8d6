"""Models shared by the tests: a tiny random model with edge-case embedding rows, and the shipped
checkpoint's path."""

from pathlib import Path

import torch

from models.checkpoint import export_checkpoint, load_checkpoint
from models.config import ModelConfig
from models.mmfree import MMFreeLM

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "checkpoints" / "mmfree-tiny.safetensors"
#: Embedding rows of the tiny model: all zero (the zero-scale path of the normalisation), huge
#: (saturates the 32-bit residual at load), large and one-signed.
ZERO_TOK, HUGE_TOK, NEG_TOK = 5, 7, 9


def random_model(seed: int = 0, d_model: int = 32, n_layers: int = 2) -> MMFreeLM:
    """A random MMFreeLM with non-trivial norm weights and lower bounds (as tests/test_intref.py)
    and the three edge rows above in its embedding."""
    torch.manual_seed(seed)
    m = MMFreeLM(ModelConfig(d_model=d_model, n_layers=n_layers))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.mul_(1 + 0.3 * torch.randn_like(p))
        m.model.lower_bounds.normal_()
        emb = m.model.embeddings.weight
        emb[ZERO_TOK] = 0.0
        emb[HUGE_TOK] = 4000.0 * torch.sign(torch.randn(d_model))
        emb[NEG_TOK] = -torch.abs(emb[NEG_TOK]) * 50.0
    return m


def tiny_checkpoint(path, seed: int = 0):
    """Export :func:`random_model` to ``path`` and load it back (a ``models.checkpoint.Checkpoint``)."""
    export_checkpoint(random_model(seed), path, {"purpose": "test"})
    return load_checkpoint(path)
