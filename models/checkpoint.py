"""Inference checkpoint format of the MatMul-free LM: safetensors, no pickle.

Layout
------
A safetensors file whose ``__metadata__`` holds (all values are strings, as safetensors wants):

``format``          ``"mmfree-lm"``
``format_version``  ``"1"`` (:data:`FORMAT_VERSION`)
``config``          JSON of :class:`models.config.ModelConfig`
``meta``            JSON object: free-form provenance (training command, data source and licence,
                    validation bits per byte, ...); always has ``quantized`` (bool) equal to
                    ``config.quantize``.

Tensors, under the reference ``HGRNBitForCausalLM`` keys (SPEC section 1):

- every BitLinear ``X`` of a ternary model (``config.quantize = True``):
  ``X.weight`` int8 ``(out, in)`` with values in {-1, 0, +1};
  ``X.beta`` float32 ``(1,)``: the absmean scale of the LATENT matrix at export
  (never recomputed from ``X.weight``: re-quantising ternary weights is not idempotent);
  ``X.norm.weight`` float32 ``(in,)``.
- every BitLinear ``X`` of a float model (``config.quantize = False``): ``X.weight`` float32 or
  float16 ``(out, in)``, ``X.norm.weight`` float32, no ``X.beta``.
- everything else float32: ``model.embeddings.weight`` ``(V, d)``, ``model.lower_bounds``
  ``(L, d)`` (raw parameters, before softmax/cumsum), all RMSNorm weights ``(d,)``.

:func:`load_checkpoint` validates the whole file and raises :class:`CheckpointError` (a
``ValueError``) naming the problem and the tensor key. Files are written atomically.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelConfig

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "Checkpoint",
    "bitlinear_names",
    "expected_tensors",
    "model_tensors",
    "write_checkpoint",
    "export_checkpoint",
    "load_checkpoint",
]

FORMAT_NAME = "mmfree-lm"
FORMAT_VERSION = 1

_SAFETENSORS_DTYPES = {"I8": np.int8, "F32": np.float32, "F16": np.float16}


class CheckpointError(ValueError):
    """A checkpoint file is malformed, truncated, of another version or inconsistent."""


@dataclass
class Checkpoint:
    """A loaded and validated checkpoint.

    Attributes
    ----------
    config : ModelConfig
    tensors : dict of str to numpy.ndarray
        Every tensor under its key (int8 ternary weights, float32 otherwise).
    meta : dict
        Provenance metadata; ``meta["quantized"] == config.quantize``.
    """

    config: ModelConfig
    tensors: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        """Whether the BitLinears are ternary (int8 weights plus beta)."""
        return self.config.quantize

    def ternary(self, name: str) -> tuple[np.ndarray, float]:
        """Return ``(W_t int8 (out, in), beta)`` of the BitLinear ``name`` (e.g. ``"lm_head"``)."""
        if not self.quantized:
            raise CheckpointError("float checkpoint has no ternary weights")
        return self.tensors[f"{name}.weight"], float(self.tensors[f"{name}.beta"][0])


def bitlinear_names(config: ModelConfig) -> list[str]:
    """Names of all BitLinears of a model, in forward order (LM head last)."""
    names = []
    for n in range(config.n_layers):
        p = f"model.layers.{n}."
        names += [p + "attn.i_proj", p + "attn.f_proj", p + "attn.g_proj", p + "attn.o_proj",
                  p + "mlp.gate_proj", p + "mlp.down_proj"]
    return names + ["lm_head"]


def expected_tensors(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[type, ...]]]:
    """Map every key of a checkpoint of ``config`` to ``(shape, allowed numpy dtypes)``."""
    d, i, v, L = config.d_model, config.d_ff, config.vocab_size, config.n_layers
    f32 = (np.float32,)
    wdt = (np.int8,) if config.quantize else (np.float32, np.float16)
    spec: dict[str, tuple[tuple[int, ...], tuple[type, ...]]] = {
        "model.embeddings.weight": ((v, d), f32),
        "model.lower_bounds": ((L, d), f32),
    }

    def bitlinear(name: str, out: int, inp: int) -> None:
        spec[f"{name}.weight"] = ((out, inp), wdt)
        if config.quantize:
            spec[f"{name}.beta"] = ((1,), f32)
        spec[f"{name}.norm.weight"] = ((inp,), f32)

    for n in range(L):
        p = f"model.layers.{n}."
        spec[p + "attn_norm.weight"] = ((d,), f32)
        for proj in "ifgo":
            bitlinear(p + f"attn.{proj}_proj", d, d)
        spec[p + "attn.g_norm.weight"] = ((d,), f32)
        spec[p + "mlp_norm.weight"] = ((d,), f32)
        bitlinear(p + "mlp.gate_proj", 2 * i, d)
        bitlinear(p + "mlp.down_proj", d, i)
    spec["model.norm.weight"] = ((d,), f32)
    bitlinear("lm_head", v, d)
    return spec


def model_tensors(model) -> dict[str, np.ndarray]:
    """Inference tensors of an :class:`models.mmfree.MMFreeLM` (training or frozen).

    Ternary models: each BitLinear's weight is ternarised once here (or taken as stored when the
    model is frozen) and its beta is that of the latent matrix.
    """
    import torch

    bl = dict(model.bitlinears())
    quant = model.config.quantize
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for key, value in model.state_dict().items():
            owner = key.rsplit(".", 1)[0]
            if owner in bl and key.endswith(".weight") and key == f"{owner}.weight":
                if quant:
                    w_t, beta = bl[owner].ternary()
                    out[key] = w_t.cpu().numpy().astype(np.int8)
                    out[f"{owner}.beta"] = np.asarray(beta.cpu().numpy(), dtype=np.float32).reshape(1)
                else:
                    out[key] = value.detach().cpu().numpy().astype(np.float32)
            elif owner in bl and key == f"{owner}.beta":
                continue  # already written with the weight
            else:
                out[key] = value.detach().cpu().numpy().astype(np.float32)
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_checkpoint(path: str | os.PathLike, config: ModelConfig, tensors: dict[str, np.ndarray],
                     meta: dict[str, Any] | None = None, *, format_version: int = FORMAT_VERSION) -> Path:
    """Write tensors and config as a checkpoint file (atomically), without validating them.

    Use :func:`export_checkpoint` for models; this lower-level writer exists for tools and tests.
    """
    from safetensors.numpy import save

    meta = dict(meta or {})
    meta["quantized"] = config.quantize
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(format_version),
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "meta": json.dumps(meta, sort_keys=True),
    }
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    path = Path(path)
    _atomic_write(path, save(arrays, metadata=metadata))
    return path


def export_checkpoint(model, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Export an :class:`models.mmfree.MMFreeLM` as an inference checkpoint.

    Parameters
    ----------
    model : MMFreeLM
        Training model (latent weights are ternarised here) or a frozen model.
    path : path-like
        Destination ``.safetensors`` file; written via a temporary file and a rename.
    meta : dict, optional
        JSON-serialisable provenance stored in the file.

    Returns
    -------
    pathlib.Path
    """
    tensors = model_tensors(model)
    _validate(model.config, tensors, str(path))
    return write_checkpoint(path, model.config, tensors, meta)


def _parse_header(raw: bytes, where: str) -> tuple[dict, dict, int]:
    if len(raw) < 8:
        raise CheckpointError(f"{where}: truncated file ({len(raw)} bytes, no safetensors header)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise CheckpointError(f"{where}: truncated file or corrupt header (header length {n} > {len(raw) - 8} bytes left)")
    try:
        header = json.loads(raw[8: 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: corrupt header (not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: corrupt header (not a JSON object)")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{where}: header has no __metadata__ (not an {FORMAT_NAME} checkpoint)")
    end = 0
    for key, info in header.items():
        try:
            start, stop = info["data_offsets"]
            dtype, shape = info["dtype"], info["shape"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{where}: corrupt header entry for key {key!r}") from None
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop):
            raise CheckpointError(f"{where}: corrupt data offsets for key {key!r}")
        if dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{where}: key {key!r} has unsupported dtype {dtype}")
        count = int(np.prod(shape)) if shape else 1
        if stop - start != count * np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize:
            raise CheckpointError(f"{where}: key {key!r}: data size does not match shape {shape} and dtype {dtype}")
        end = max(end, stop)
    data_len = len(raw) - 8 - n
    if data_len < end:
        raise CheckpointError(f"{where}: truncated file (data section has {data_len} bytes, header needs {end})")
    if data_len > end:
        raise CheckpointError(f"{where}: {data_len - end} trailing bytes after the data section")
    return header, metadata, n


def _validate(config: ModelConfig, tensors: dict[str, np.ndarray], where: str) -> None:
    spec = expected_tensors(config)
    missing = sorted(set(spec) - set(tensors))
    if missing:
        raise CheckpointError(f"{where}: missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(set(tensors) - set(spec))
    if extra:
        raise CheckpointError(f"{where}: unexpected key {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for key, (shape, dtypes) in spec.items():
        arr = tensors[key]
        if arr.dtype.type not in dtypes:
            raise CheckpointError(f"{where}: key {key!r} has dtype {arr.dtype}, expected "
                                  + " or ".join(np.dtype(t).name for t in dtypes))
        if tuple(arr.shape) != shape:
            raise CheckpointError(f"{where}: key {key!r} has shape {tuple(arr.shape)}, expected {shape}")
        if arr.dtype == np.int8:
            bad = (arr < -1) | (arr > 1)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise CheckpointError(f"{where}: key {key!r} is not ternary (value {int(arr[idx])} at {idx})")
        elif not np.isfinite(arr).all():
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise CheckpointError(f"{where}: key {key!r} has a non-finite value ({arr[idx]}) at {idx}")
        if key.endswith(".beta") and not arr[0] > 0:
            raise CheckpointError(f"{where}: key {key!r} must be positive, got {arr[0]}")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate a checkpoint.

    Raises
    ------
    CheckpointError
        Truncated file, corrupt header, wrong format or version, bad config, missing or extra
        keys, wrong shapes or dtypes, non-ternary weights, non-finite values.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    where = str(path)
    raw = Path(path).read_bytes()
    _, metadata, _ = _parse_header(raw, where)
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where}: metadata 'format' is {metadata.get('format')!r}, expected {FORMAT_NAME!r}")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{where}: unsupported format_version {metadata.get('format_version')!r} "
                              f"(this loader reads version {FORMAT_VERSION})")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: metadata 'config' is missing or invalid: {exc}") from None
    try:
        meta = json.loads(metadata.get("meta", "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where}: metadata 'meta' is not JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("quantized") != config.quantize:
        raise CheckpointError(f"{where}: metadata 'meta.quantized' must equal config.quantize ({config.quantize})")
    try:
        tensors = dict(load(raw))
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{where}: corrupt safetensors data: {exc}") from None
    _validate(config, tensors, where)
    return Checkpoint(config=config, tensors=tensors, meta=meta)
