"""Float golden model: reference parameter names, parallel == recurrent, BitLinear arithmetic."""

import pytest
import torch
import torch.nn.functional as F

from models.config import ModelConfig, glu_hidden_size
from models.mmfree import BitLinear, MMFreeLM
from models.quant import act_quant_int8, ternary_quant


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _randomised_model(config: ModelConfig, seed: int = 0) -> MMFreeLM:
    """Model whose norms and lower bounds are not at their initial values (all paths matter)."""
    torch.manual_seed(seed)
    model = MMFreeLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name == "model.lower_bounds":
                p.copy_(torch.randn_like(p))
            elif name == "model.embeddings.weight":
                p.copy_(torch.randn_like(p))
    return model.eval()


def test_d_ff_formula():
    assert glu_hidden_size(128) == 512   # int(341.3) = 341 -> 512
    assert glu_hidden_size(192) == 512
    assert glu_hidden_size(256) == 768
    assert glu_hidden_size(1024) == 2816  # released 370M model
    assert glu_hidden_size(2048) == 5632  # released 1.3B model
    assert glu_hidden_size(2560) == 6912  # released 2.7B model
    assert ModelConfig(d_model=128, n_layers=4).ternary_weights == 4 * (4 * 128**2 + 3 * 512 * 128) + 256 * 128


def test_config_roundtrip_and_validation():
    cfg = ModelConfig(d_model=64, n_layers=2, quantize=False)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ModelConfig(d_model=0)
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"d_model": 64, "bogus": 1})


def test_state_dict_keys_are_the_reference_keys():
    cfg = ModelConfig(d_model=32, n_layers=2)
    d, i, v = 32, cfg.d_ff, 256
    expected = {"model.embeddings.weight": (v, d), "model.lower_bounds": (2, d),
                "model.norm.weight": (d,), "lm_head.weight": (v, d), "lm_head.norm.weight": (d,)}
    for n in range(2):
        p = f"model.layers.{n}."
        expected[p + "attn_norm.weight"] = (d,)
        expected[p + "mlp_norm.weight"] = (d,)
        expected[p + "attn.g_norm.weight"] = (d,)
        for proj in "ifgo":
            expected[p + f"attn.{proj}_proj.weight"] = (d, d)
            expected[p + f"attn.{proj}_proj.norm.weight"] = (d,)
        expected[p + "mlp.gate_proj.weight"] = (2 * i, d)
        expected[p + "mlp.gate_proj.norm.weight"] = (d,)
        expected[p + "mlp.down_proj.weight"] = (d, i)
        expected[p + "mlp.down_proj.norm.weight"] = (i,)
    got = {k: tuple(t.shape) for k, t in MMFreeLM(cfg).state_dict().items()}
    assert got == expected


@pytest.mark.parametrize("quantize", [True, False])
def test_parallel_equals_recurrent(quantize):
    cfg = ModelConfig(d_model=32, n_layers=3, quantize=quantize)
    model = _randomised_model(cfg, seed=3)
    torch.manual_seed(4)
    for length in (1, 2, 7, 40):
        tokens = torch.randint(0, 256, (3, length))
        with torch.no_grad():
            logits, hidden, final_state = model(tokens, return_hidden=True, return_state=True)
            state = model.init_state(3)
            step_logits, step_hidden = [], []
            for t in range(length):
                lt, state, ht = model.step(tokens[:, t], state, return_hidden=True)
                step_logits.append(lt)
                step_hidden.append(ht)
        assert len(hidden) == cfg.n_layers + 1
        torch.testing.assert_close(torch.stack(step_logits, dim=1), logits, rtol=1e-5, atol=1e-5)
        for layer in range(cfg.n_layers + 1):
            torch.testing.assert_close(torch.stack([h[layer] for h in step_hidden], dim=1), hidden[layer],
                                       rtol=1e-5, atol=1e-5)
        for s_par, s_rec in zip(final_state, state):
            torch.testing.assert_close(s_rec, s_par, rtol=1e-5, atol=1e-5)


def test_parallel_mode_continues_from_a_state():
    model = _randomised_model(ModelConfig(d_model=32, n_layers=2), seed=5)
    tokens = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        first, state = model(tokens[:, :8], return_state=True)
        second = model(tokens[:, 8:], state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, rtol=1e-5, atol=1e-5)


def test_lower_bounds():
    model = _randomised_model(ModelConfig(d_model=16, n_layers=4), seed=6)
    lb = model.model.layer_lower_bounds()
    assert torch.equal(lb[0], torch.zeros(16))
    assert bool((lb[1:] > 0).all()) and bool((lb < 1).all())
    assert bool((lb[1:] >= lb[:-1]).all())


def test_bitlinear_arithmetic():
    torch.manual_seed(7)
    layer = BitLinear(24, 10)
    with torch.no_grad():
        layer.norm.weight.copy_(1 + 0.5 * torch.rand(24))
    x = torch.randn(5, 24)
    x_n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.norm.weight
    x_q, a = act_quant_int8(x_n)
    w_t, beta = ternary_quant(layer.weight)
    acc = x_q.double() @ w_t.double().T           # the integer dot product, exactly
    assert bool((acc == acc.round()).all())
    expected = acc.float() * ((a / 127.0) * beta)
    assert torch.equal(layer(x).detach(), expected)


def test_float_bitlinear_is_norm_then_linear():
    torch.manual_seed(8)
    layer = BitLinear(12, 6, quantize=False)
    x = torch.randn(4, 12)
    x_n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.norm.weight
    torch.testing.assert_close(layer(x), F.linear(x_n, layer.weight))


@pytest.mark.parametrize("quantize", [True, False])
def test_training_reduces_loss(quantize):
    torch.manual_seed(9)
    model = MMFreeLM(ModelConfig(d_model=32, n_layers=2, quantize=quantize))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.tensor([list(b"the cat sat on the mat. " * 2)])
    losses = []
    for _ in range(30):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]


def test_greedy_generation_matches_parallel_argmax(tmp_path):
    from models.checkpoint import export_checkpoint, load_checkpoint
    from models.generate import FloatBackend, generate, next_token

    model = _randomised_model(ModelConfig(d_model=16, n_layers=2), seed=11)
    path = export_checkpoint(model, tmp_path / "g.safetensors", {})
    backend = FloatBackend(load_checkpoint(path))
    prompt = b"To be"
    out = list(generate(backend, prompt, 12))
    seq = torch.tensor([list(prompt) + out])
    with torch.no_grad():
        logits = model(seq[:, :-1])
    assert out == logits[0, len(prompt) - 1:].argmax(-1).tolist()
    # sampling: seeded, top-k = 1 is greedy, and the result only ever comes from the top k
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([0.0, 3.0, 1.0, 2.9])
    assert next_token(x, temperature=1.0, top_k=1, generator=g) == 1
    assert {next_token(x, temperature=5.0, top_k=2, generator=g) for _ in range(50)} == {1, 3}
    assert next_token(torch.tensor([5, -3, 7, 7]), temperature=0) == 2
