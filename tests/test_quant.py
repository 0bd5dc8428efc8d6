"""Quantisers: the rounding rule at exact ties, hand-computed int8 and ternary examples, STE."""

import numpy as np
import pytest
import torch

from models.quant import (
    act_quant_int8,
    act_quant_int8_ste,
    round_half_away,
    ternary_quant,
    ternary_quant_ste,
)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_half_away_ties(dtype):
    x = torch.tensor([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, -3.5, 126.5, -128.5], dtype=dtype)
    expected = torch.tensor([1, -1, 2, -2, 3, -3, 4, -4, 127, -129], dtype=dtype)
    assert torch.equal(round_half_away(x), expected)
    # torch.round rounds half to even and differs on these ties
    differs = torch.round(x) != expected
    assert differs.tolist() == [True, True, False, False, True, True, False, False, True, True]


def test_round_half_away_non_ties():
    below_half = np.nextafter(np.float32(0.5), np.float32(0.0))
    below_1p5 = np.nextafter(np.float32(1.5), np.float32(0.0))
    x = torch.tensor([below_half, -below_half, below_1p5, 0.0, -0.0, 0.7, -0.7, 2.3, -2.3,
                      2.0**23 + 1, -(2.0**23) - 1, 1e-30], dtype=torch.float32)
    expected = torch.tensor([0, 0, 1, 0, 0, 1, -1, 2, -2, 2.0**23 + 1, -(2.0**23) - 1, 0], dtype=torch.float32)
    assert torch.equal(round_half_away(x), expected)
    # the naive floor(x + 0.5) gets the float just below 0.5 wrong; this implementation must not
    assert torch.floor(torch.tensor(below_half) + 0.5).item() == 1.0


def test_round_half_away_does_not_modify_input():
    x = torch.tensor([0.5, -1.5, 2.2])
    before = x.clone()
    round_half_away(x)
    assert torch.equal(x, before)


def test_act_quant_int8_hand_computed():
    # a = 254; x * 127 / a = [127, 62.5, -62.5, 0.5, 0]
    x = torch.tensor([[254.0, 125.0, -125.0, 1.0, 0.0]])
    x_q, a = act_quant_int8(x)
    assert a.shape == (1, 1) and a.item() == 254.0
    assert x_q.tolist() == [[127.0, 63.0, -63.0, 1.0, 0.0]]
    assert torch.round(x * 127 / a).tolist() == [[127.0, 62.0, -62.0, 0.0, 0.0]]


def test_act_quant_int8_per_token_and_zero_floor():
    x = torch.tensor([[[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0], [-8.0, 4.0, 2.0, 1.0]]])
    x_q, a = act_quant_int8(x)
    assert a.shape == (1, 3, 1)
    assert a[0, :, 0].tolist() == pytest.approx([1.0, 1e-5, 8.0])
    # row 0: [127, -63.5, 31.75, 0] -> [127, -64, 32, 0]; row 2: [-127, 63.5, 31.75, 15.875]
    assert x_q[0].tolist() == [[127, -64, 32, 0], [0, 0, 0, 0], [-127, 64, 32, 16]]
    assert x_q.min() >= -127 and x_q.max() <= 127


def test_ternary_quant_hand_computed():
    w = torch.tensor([[0.375, -0.125, 0.0625, 0.0], [-0.75, 0.1875, 0.25, -0.25]])
    w_t, beta = ternary_quant(w)
    assert beta.item() == 0.25  # mean |W| over the whole matrix
    # W / beta = [[1.5, -0.5, 0.25, 0], [-3, 0.75, 1, -1]]
    assert w_t.tolist() == [[1, -1, 0, 0], [-1, 1, 1, -1]]
    assert torch.round(w / beta).clamp(-1, 1)[0, 1].item() == 0.0  # half-to-even would give 0


def test_ternary_quant_zero_matrix_floor():
    w_t, beta = ternary_quant(torch.zeros(3, 4))
    assert beta.item() == pytest.approx(1e-5)
    assert torch.count_nonzero(w_t) == 0


def test_ternary_requantisation_is_not_idempotent():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    w_t, beta = ternary_quant(w)
    w_t2, beta2 = ternary_quant(w_t * beta)
    nonzero = (w_t != 0).float().mean()
    assert torch.equal(w_t2, w_t)
    assert beta2.item() == pytest.approx((beta * nonzero).item(), rel=1e-5)
    assert beta2.item() < 0.9 * beta.item()


def test_ste_values_and_gradients():
    torch.manual_seed(1)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    x_q, a = act_quant_int8_ste(x)
    x_q_ref, a_ref = act_quant_int8(x.detach())
    assert torch.equal(x_q.detach(), x_q_ref) and torch.equal(a, a_ref)
    weights = torch.randn(3, 5, dtype=torch.float64)
    (x_q * weights).sum().backward()
    assert torch.allclose(x.grad, weights * 127.0 / a_ref)

    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w_t, beta = ternary_quant_ste(w)
    w_t_ref, beta_ref = ternary_quant(w.detach())
    assert torch.equal(w_t.detach(), w_t_ref) and beta.item() == beta_ref.item()
    w_t.sum().backward()
    assert torch.allclose(w.grad, torch.full_like(w, 1.0 / beta_ref.item()))
