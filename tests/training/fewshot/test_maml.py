import pytest
import torch
from torch import nn
from torch.func import functional_call

from training.fewshot.maml import adapt, adaptable_params, inner_step


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    xs, ys = torch.randn(4, 3), torch.randn(4, 1)   # support
    xq, yq = torch.randn(5, 3), torch.randn(5, 1)   # query
    return model, xs, ys, xq, yq


def _mse(model, params, x, y):
    return 0.5 * (functional_call(model, params, (x,)) - y).pow(2).sum()


@pytest.mark.parametrize("first_order", [False, True])
def test_inner_step_on_a_linear_model_matches_the_hand_computed_update(first_order):
    model, xs, ys, xq, yq = _setup()
    alpha = 0.1
    w = model.weight.detach().clone().view(3)
    # L_s(w) = 1/2 ||Xs w - ys||^2  =>  grad = Xs^T (Xs w - ys)
    w_adapted = w - alpha * xs.t() @ (xs @ w - ys.view(-1))
    params = adaptable_params(model)
    new = inner_step(params, _mse(model, params, xs, ys), alpha, first_order)
    torch.testing.assert_close(new["weight"].view(3), w_adapted)

    # Outer gradient of L_q(w') = 1/2 ||Xq w' - yq||^2 with respect to the initial w:
    g_q = xq.t() @ (xq @ w_adapted - yq.view(-1))
    if first_order:
        expected = g_q                                          # FOMAML: dw'/dw taken as I
    else:
        expected = (torch.eye(3) - alpha * xs.t() @ xs) @ g_q  # MAML: dw'/dw = I - alpha * Hessian
    _mse(model, new, xq, yq).backward()
    torch.testing.assert_close(model.weight.grad.view(3), expected)


def test_two_steps_compose():
    model, xs, ys, xq, yq = _setup()
    alpha = 0.05
    w = model.weight.detach().clone().view(3)
    for _ in range(2):
        w = w - alpha * xs.t() @ (xs @ w - ys.view(-1))
    out = adapt(adaptable_params(model), lambda p: _mse(model, p, xs, ys), 2, alpha, first_order=False)
    torch.testing.assert_close(out["weight"].view(3), w)


def test_adaptable_params_by_prefix():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert set(adaptable_params(net, ["1."])) == {"1.weight", "1.bias"}
    with pytest.raises(ValueError, match="no parameter name starts with"):
        adaptable_params(net, ["head"])
