"""Inference checkpoint format: round trip, stored beta, exact reproduction, loader errors."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import (
    CheckpointError,
    expected_tensors,
    export_checkpoint,
    load_checkpoint,
    model_tensors,
    write_checkpoint,
)
from models.config import ModelConfig
from models.mmfree import MMFreeLM
from models.quant import ternary_quant

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "checkpoints" / "mmfree-tiny.safetensors"
SHIPPED_FLOAT = REPO / "models" / "checkpoints" / "mmfree-tiny-float.safetensors"
WEIGHT_BUDGET = 1_200_000


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _model(quantize=True, seed=0):
    torch.manual_seed(seed)
    model = MMFreeLM(ModelConfig(d_model=32, n_layers=2, quantize=quantize))
    with torch.no_grad():
        model.model.lower_bounds.normal_()
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model.eval()


@pytest.fixture
def exported(tmp_path):
    model = _model()
    path = export_checkpoint(model, tmp_path / "m.safetensors", {"note": "test"})
    return model, path


def test_roundtrip_and_metadata(exported, tmp_path):
    model, path = exported
    ckpt = load_checkpoint(path)
    assert ckpt.config == model.config
    assert ckpt.meta == {"note": "test", "quantized": True}
    assert set(ckpt.tensors) == set(expected_tensors(model.config))
    assert ckpt.tensors["lm_head.weight"].dtype == np.int8
    assert ckpt.tensors["model.lower_bounds"].dtype == np.float32
    np.testing.assert_array_equal(ckpt.tensors["model.lower_bounds"], model.model.lower_bounds.detach().numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    assert b"pickle" not in path.read_bytes()[:8]


def test_beta_is_the_latent_beta(exported):
    model, path = exported
    ckpt = load_checkpoint(path)
    for name, module in model.bitlinears():
        w_t, beta = ternary_quant(module.weight.detach())
        stored = ckpt.tensors[f"{name}.beta"]
        assert stored.shape == (1,) and stored.dtype == np.float32
        assert stored[0] == np.float32(beta.item())
        np.testing.assert_array_equal(ckpt.tensors[f"{name}.weight"], w_t.numpy().astype(np.int8))
        # not the beta one would get by re-quantising the stored ternary weights
        w_stored = torch.from_numpy(ckpt.tensors[f"{name}.weight"].astype(np.float32))
        assert stored[0] != pytest.approx(ternary_quant(w_stored)[1].item(), rel=1e-3)
        assert stored[0] != pytest.approx(ternary_quant(w_stored * float(stored[0]))[1].item(), rel=1e-3)


def test_frozen_model_reproduces_logits_exactly(exported):
    model, path = exported
    frozen = MMFreeLM.from_checkpoint(path)
    assert frozen.frozen
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(frozen(tokens), model(tokens))
        s_a, s_b = model.init_state(2), frozen.init_state(2)
        for t in range(5):
            la, s_a = model.step(tokens[:, t], s_a)
            lb, s_b = frozen.step(tokens[:, t], s_b)
            assert torch.equal(la, lb)
    # exporting the frozen model gives the same tensors (stored beta kept, nothing re-quantised)
    again = model_tensors(frozen)
    original = load_checkpoint(path).tensors
    assert again.keys() == original.keys()
    for key in original:
        np.testing.assert_array_equal(again[key], original[key])


def test_float_checkpoint_roundtrip(tmp_path):
    model = _model(quantize=False)
    path = export_checkpoint(model, tmp_path / "f.safetensors", {})
    ckpt = load_checkpoint(path)
    assert ckpt.meta["quantized"] is False and not ckpt.config.quantize
    assert "lm_head.beta" not in ckpt.tensors
    assert ckpt.tensors["lm_head.weight"].dtype == np.float32
    tokens = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(MMFreeLM.from_checkpoint(ckpt)(tokens), model(tokens))


# ---------------------------------------------------------------- loader errors


def _rewrite(path, mutate_tensors=None, config=None, version=1):
    ckpt = load_checkpoint(path)
    tensors = dict(ckpt.tensors)
    if mutate_tensors:
        mutate_tensors(tensors)
    meta = {k: v for k, v in ckpt.meta.items() if k != "quantized"}
    write_checkpoint(path, config or ckpt.config, tensors, meta, format_version=version)
    return path


def test_error_truncated(exported):
    _, path = exported
    raw = path.read_bytes()
    for cut in (4, 100, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            load_checkpoint(path)


def test_error_garbage(tmp_path):
    path = tmp_path / "g.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"this is no json!" + bytes(range(64)))
    with pytest.raises(CheckpointError, match="corrupt header"):
        load_checkpoint(path)
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_error_corrupt_header_offsets(exported):
    _, path = exported
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8: 8 + n])
    header["lm_head.weight"]["data_offsets"][1] += 1
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        load_checkpoint(path)


def test_error_wrong_version(exported):
    _, path = exported
    _rewrite(path, version=2)
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(path)


def test_error_missing_key(exported):
    _, path = exported
    _rewrite(path, lambda t: t.pop("model.layers.1.attn.f_proj.beta"))
    with pytest.raises(CheckpointError, match=r"missing key 'model\.layers\.1\.attn\.f_proj\.beta'"):
        load_checkpoint(path)


def test_error_extra_key(exported):
    _, path = exported
    _rewrite(path, lambda t: t.__setitem__("model.layers.0.attn.extra", np.zeros(3, np.float32)))
    with pytest.raises(CheckpointError, match=r"unexpected key 'model\.layers\.0\.attn\.extra'"):
        load_checkpoint(path)


def test_error_wrong_shape(exported):
    _, path = exported
    _rewrite(path, lambda t: t.__setitem__("model.norm.weight", np.ones(31, np.float32)))
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' has shape \(31,\)"):
        load_checkpoint(path)


def test_error_wrong_dtype(exported):
    _, path = exported
    _rewrite(path, lambda t: t.__setitem__("lm_head.weight", t["lm_head.weight"].astype(np.float32)))
    with pytest.raises(CheckpointError, match=r"'lm_head\.weight' has dtype float32"):
        load_checkpoint(path)


def test_error_non_ternary(exported):
    _, path = exported

    def poke(t):
        w = t["model.layers.0.mlp.down_proj.weight"].copy()
        w[3, 5] = 2
        t["model.layers.0.mlp.down_proj.weight"] = w

    _rewrite(path, poke)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.mlp\.down_proj\.weight' is not ternary"):
        load_checkpoint(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_non_finite(exported, bad):
    _, path = exported

    def poke(t):
        w = t["model.embeddings.weight"].copy()
        w[7, 1] = bad
        t["model.embeddings.weight"] = w

    _rewrite(path, poke)
    with pytest.raises(CheckpointError, match=r"'model\.embeddings\.weight' has a non-finite value"):
        load_checkpoint(path)


def test_error_config_mismatch(exported):
    _, path = exported
    _rewrite(path, config=ModelConfig(d_model=32, n_layers=3))
    with pytest.raises(CheckpointError, match="missing key 'model.layers.2"):
        load_checkpoint(path)


# ---------------------------------------------------------------- shipped checkpoints


def test_shipped_checkpoints_shapes_and_budget():
    ckpt = load_checkpoint(SHIPPED)
    cfg = ckpt.config
    assert cfg.quantize and cfg.vocab_size == 256
    assert cfg.ternary_weights <= WEIGHT_BUDGET
    assert sum(ckpt.tensors[k].size for k in ckpt.tensors if ckpt.tensors[k].dtype == np.int8) == cfg.ternary_weights
    assert 0 < ckpt.meta["val_bpb"] < 8 and ckpt.meta["final"]
    baseline = load_checkpoint(SHIPPED_FLOAT)
    assert not baseline.config.quantize
    assert (baseline.config.d_model, baseline.config.n_layers) == (cfg.d_model, cfg.n_layers)
    assert baseline.meta["train_args"]["steps"] == ckpt.meta["train_args"]["steps"]
