"""drclib.drc.modules: shapes, the self/cross forms, gradient flow, what each block can see, bad input."""

import pytest
import torch

from drclib.drc.modules import (ConcatFusion, CrossAttention, FusionNetwork, MLPTower, SemTower, StyleTower, Tower)

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


def _mask_inputs(b=2, n=3, t=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, t, D, generator=g), torch.randn(b, t, D, generator=g)


def test_mask_generator_keeps_the_asked_share_and_is_binary():
    from drclib.drc.modules import MaskGenerator

    mg = MaskGenerator(D).eval()
    fs, fm = _mask_inputs()
    m_h, m_r = mg(fs, fm, alpha_s=0.2, alpha_m=0.75)
    assert m_h.shape == (2, 3, 64) and m_r.shape == (2, 64)
    for m in (m_h, m_r):                                  # 0 or 1 up to float rounding of the straight-through sum
        torch.testing.assert_close(m, m.round(), atol=1e-6, rtol=0)
    assert (m_h.round().sum((1, 2)) == MaskGenerator.keep_count(3 * 64, 0.2)).all()   # joint over the history
    assert (m_r.round().sum(1) == MaskGenerator.keep_count(64, 0.75)).all()
    m0 = mg(fs, fm, 0.0, 1.0)[1]
    assert (m0.round().sum(1) == 1).all()                                              # alpha 1 still keeps one
    torch.testing.assert_close(mg(fs, fm, 0.2, 0.75)[0], m_h)                        # deterministic at inference


def test_mask_generator_receives_gradient_through_the_mask():
    """The defect of Pigeon's released code: masks as indices cut the gradient. Ours are
    multiplied in (straight-through), so a loss on the masked features reaches every
    parameter of the generator."""
    from drclib.drc.modules import MaskGenerator

    torch.manual_seed(0)
    mg = MaskGenerator(D).train()
    fs, fm = _mask_inputs()
    m_h, m_r = mg(fs, fm, 0.2, 0.5)
    masked = (fs * m_h[..., None]).mean(1) + fm * m_r[..., None]
    (masked.square().sum()).backward()
    grads = {n: p.grad for n, p in mg.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert grads["encoder.self_attn.in_proj_weight"].abs().sum() > 0


def test_mask_generator_padding_and_bad_input():
    from drclib.drc.modules import MaskGenerator

    mg = MaskGenerator(D, max_history=4).eval()
    fs, fm = _mask_inputs(n=3)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    m_h, _ = mg(fs, fm, 0.0, 0.0, history_mask=valid)
    m_h = m_h.round()
    assert m_h[0, 2].sum() == 0 and m_h[1, 1:].sum() == 0                         # padding never kept
    assert m_h[1, 0].sum() == 64
    for kw, msg in ((dict(alpha_s=1.5, alpha_m=0.2), "alpha_s must lie in"),
                    (dict(alpha_s=0.2, alpha_m=float("nan")), "alpha_m must lie in"),
                    (dict(alpha_s=0.2, alpha_m=-0.1), "alpha_m must lie in")):
        with pytest.raises(ValueError, match=msg):
            mg(fs, fm, **kw)
    with pytest.raises(ValueError, match="history is empty"):
        mg(fs[:, :0], fm, 0.2, 0.2)
    with pytest.raises(ValueError, match="max_history"):
        mg(torch.randn(2, 5, 64, D), fm, 0.2, 0.2)
    with pytest.raises(ValueError, match="at least one real history image"):
        mg(fs, fm, 0.2, 0.2, history_mask=torch.zeros(2, 3, dtype=torch.bool))
