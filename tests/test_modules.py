"""drclib.modules: shapes, the self/cross forms, gradient flow, what each block can see, bad input."""

import pytest
import torch

from drclib.modules import (ConcatFusion, CrossAttention, FusionNetwork, MLPTower, SemTower, StyleTower, Tower)

D = 32


def tokens(b=2, t=64, d=D, seed=0):
    return torch.randn(b, t, d, generator=torch.Generator().manual_seed(seed))


def test_cross_attention_shapes_and_weights():
    ca = CrossAttention(D, heads=4)
    out, w = ca(tokens(t=10), tokens(t=7, seed=1), need_weights=True)
    assert out.shape == (2, 10, D) and w.shape == (2, 10, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 10))
    with pytest.raises(ValueError, match="divisible"):
        CrossAttention(30, heads=4)


@pytest.mark.parametrize("cls", [StyleTower, SemTower, MLPTower])
def test_tower_shapes_and_gradients(cls):
    tower = cls(D, heads=4)
    q, kv = tokens().requires_grad_(), tokens(seed=1).requires_grad_()
    out = tower(q, kv)
    assert out.shape == (2, 64, D)
    out.square().mean().backward()
    assert q.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tower.parameters())
    if cls is MLPTower:
        assert kv.grad is None, "the MLP ablation must not see the second image"
    else:
        assert kv.grad.abs().sum() > 0


def test_tower_output_is_built_from_the_context_not_the_query():
    """No residual from the query: with a one-token context, every output row is the same
    (the attention can only average the context's values)."""
    tower = Tower(D, heads=4).eval()
    out = tower(tokens(t=64), tokens(t=1, seed=3))
    torch.testing.assert_close(out - out[:, :1], torch.zeros_like(out), atol=1e-5, rtol=0)


def test_tower_self_form_and_attention_map():
    tower = Tower(D).eval()
    x = tokens()
    torch.testing.assert_close(tower(x), tower(x, x))
    out, w = tower(x, tokens(seed=1), return_attention=True)
    assert w.shape == (2, 64, 64)


def test_tower_bad_input():
    tower = Tower(D)
    with pytest.raises(ValueError, match=r"\[batch, tokens, 32\]"):
        tower(torch.randn(64, D))
    with pytest.raises(ValueError, match="batch sizes differ"):
        tower(tokens(b=2), tokens(b=3))
    with pytest.raises(ValueError, match="context"):
        tower(tokens(), torch.randn(2, 64, 16))


def test_fusion_compresses_to_k_tokens_and_uses_both_inputs():
    fusion = FusionNetwork(D, n_latent=5, out_dim=48)
    s, m = tokens().requires_grad_(), tokens(seed=1).requires_grad_()
    z = fusion(s, m)
    assert z.shape == (2, 5, 48)
    z.sum().backward()
    assert s.grad.abs().sum() > 0 and m.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="batch sizes differ"):
        fusion(tokens(b=2), tokens(b=1))


def test_concat_fusion_keeps_every_token():
    z = ConcatFusion(D, out_dim=48)(tokens(), tokens(seed=1))
    assert z.shape == (2, 128, 48)
