from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from s4mi.losses import InfoNCEQueueLoss, JCLLoss, info_nce_queue_loss, jcl_enqueue_keys, jcl_loss

B, D, K = 3, 5, 7


def unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    total = torch.zeros((), dtype=q.dtype)
    for b in range(q.shape[0]):
        logits = torch.stack([q[b] @ k[b]] + [q[b] @ queue[j] for j in range(queue.shape[0])]) / tau
        total = total - (logits[0] - torch.logsumexp(logits, dim=0))
    return total / q.shape[0]


def naive_jcl(
    q: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, lam: float, tau: float, divisor: str = "M"
) -> torch.Tensor:
    """Per sample: explicit mean, explicit D x D covariance, explicit logits vector, -log softmax[0] + extra term."""
    n_views, dim = keys.shape[1], keys.shape[2]
    total = torch.zeros((), dtype=q.dtype)
    for b in range(q.shape[0]):
        mu = sum((keys[b, m] for m in range(n_views)), torch.zeros(dim, dtype=q.dtype)) / n_views
        sigma = torch.zeros(dim, dim, dtype=q.dtype)
        for m in range(n_views):
            c = keys[b, m] - mu
            sigma = sigma + torch.outer(c, c)
        n = (n_views - 1 if divisor == "M-1" else n_views) if n_views > 1 else 1
        sigma = sigma / n
        pos = q[b] @ (mu + 0.5 * lam / tau * (sigma @ q[b]))
        logits = torch.stack([pos] + [q[b] @ queue[j] for j in range(queue.shape[0])]) / tau
        total = total - (logits[0] - torch.logsumexp(logits, dim=0)) + 0.5 * lam / tau * (q[b] @ sigma @ q[b]) / tau
    return total / q.shape[0]


def test_info_nce_matches_naive_reference() -> None:
    q, k, queue = unit(B, D, seed=0), unit(B, D, seed=1), unit(K, D, seed=2)
    for tau in (0.07, 0.2, 1.0):
        got = info_nce_queue_loss(q, k, queue, tau)
        assert got.item() == pytest.approx(naive_info_nce(q, k, queue, tau).item(), rel=1e-10)
    assert torch.equal(InfoNCEQueueLoss(0.2)(q, k, queue), info_nce_queue_loss(q, k, queue, 0.2))


@pytest.mark.parametrize("m", [1, 2, 4])
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.0])
def test_jcl_matches_naive_reference(m: int, lam: float) -> None:
    keys, queue = unit(B, m, D, seed=3), unit(K, D, seed=4)
    q_got = unit(B, D, seed=5).requires_grad_()
    q_ref = q_got.detach().clone().requires_grad_()
    for tau in (0.07, 0.5):
        got = jcl_loss(q_got, keys, queue, lam, tau)
        ref = naive_jcl(q_ref, keys, queue, lam, tau)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (got.item(), ref.item())
        q_got.grad = q_ref.grad = None
        got.backward()
        ref.backward()
        assert q_got.grad is not None and q_ref.grad is not None
        assert torch.allclose(q_got.grad, q_ref.grad, rtol=1e-5, atol=1e-6)
    assert torch.equal(JCLLoss(0.5)(q_got, keys, queue, lam), jcl_loss(q_got, keys, queue, lam, 0.5))


@pytest.mark.parametrize("m", [1, 2, 4])
def test_jcl_unbiased_covariance_matches_naive_reference(m: int) -> None:
    """The default divides Sigma by M, as S2MTS2's code; ``unbiased=True`` by M - 1."""
    q, keys, queue = unit(B, D, seed=6), unit(B, m, D, seed=7), unit(K, D, seed=8)
    got = JCLLoss(0.07, unbiased=True)(q, keys, queue, 2.0)
    assert torch.allclose(got, naive_jcl(q, keys, queue, 2.0, 0.07, divisor="M-1"), rtol=1e-5, atol=1e-5)
    if m == 2:
        # dividing by M instead of M - 1 halves Sigma, i.e. halves lambda
        default = jcl_loss(q, keys, queue, 2.0, 0.07)
        assert torch.allclose(default, jcl_loss(q, keys, queue, 1.0, 0.07, unbiased=True), rtol=1e-10)


def test_jcl_single_key_without_covariance_is_info_nce() -> None:
    q, k, queue = unit(B, D, seed=9), unit(B, D, seed=10), unit(K, D, seed=11)
    expected = info_nce_queue_loss(q, k, queue)
    assert torch.equal(jcl_loss(q, k.unsqueeze(1), queue, 0.0), expected)
    # one key has no spread: Sigma = 0 whatever lambda
    assert torch.equal(jcl_loss(q, k.unsqueeze(1), queue, 2.0), expected)
    q32, k32, queue32 = q.float(), k.float(), queue.float()
    assert torch.equal(jcl_loss(q32, k32.unsqueeze(1), queue32, 0.0), info_nce_queue_loss(q32, k32, queue32))


def test_covariance_raises_the_loss() -> None:
    q, keys, queue = unit(B, D, seed=12), unit(B, 4, D, seed=13), unit(K, D, seed=14)
    values = [jcl_loss(q, keys, queue, lam).item() for lam in (0.0, 1.0, 2.0)]
    # dL/dlambda = mean_b(p_pos,b q_b^T Sigma_b q_b) / (2 tau^2) >= 0, p_pos the softmax weight of the positive
    assert values[0] < values[1] < values[2]


def test_gradients_reach_the_query_only() -> None:
    q = unit(B, D, seed=15).float().requires_grad_()
    keys = unit(B, 2, D, seed=16).float().requires_grad_()
    k = unit(B, D, seed=17).float().requires_grad_()
    queue = unit(K, D, seed=18).float().requires_grad_()
    for loss in (jcl_loss(q, keys, queue, 2.0), info_nce_queue_loss(q, k, queue)):
        assert torch.isfinite(loss) and loss.item() > 0
        q.grad = None
        loss.backward()
        assert q.grad is not None and q.grad.abs().sum() > 0
    assert keys.grad is None and k.grad is None and queue.grad is None


def test_typical_float32_magnitudes_are_finite() -> None:
    q, keys, queue = unit(256, 128, seed=19).float(), unit(256, 2, 128, seed=20).float(), unit(4096, 128, seed=21)
    loss = jcl_loss(q, keys, queue.float(), 2.0, 0.07)
    assert torch.isfinite(loss) and loss.item() > 0


def test_enqueue_keys_are_the_plain_mean() -> None:
    keys = unit(B, 2, D, seed=22).requires_grad_()
    mu = jcl_enqueue_keys(keys)
    assert mu.shape == (B, D) and not mu.requires_grad
    assert torch.allclose(mu, (keys[:, 0] + keys[:, 1]).detach() / 2)
    assert (mu.norm(dim=1) < 1).all()  # not re-normalised, as in S2MTS2's code


def test_errors_name_the_shapes() -> None:
    q, k, queue = torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(7, 5)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(7, 4\)"):
        info_nce_queue_loss(q, k, torch.zeros(7, 4))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(2, 5\)"):
        info_nce_queue_loss(q, torch.zeros(2, 5), queue)
    with pytest.raises(ValueError, match=r"\(3, 5, 1\)"):
        info_nce_queue_loss(torch.zeros(3, 5, 1), k, queue)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(3, 2, 4\)"):
        jcl_loss(q, torch.zeros(3, 2, 4), queue, 1.0)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(4, 2, 5\)"):
        jcl_loss(q, torch.zeros(4, 2, 5), queue, 1.0)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(3, 5\)"):
        jcl_loss(q, k, queue, 1.0)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(7, 4\)"):
        jcl_loss(q, torch.zeros(3, 2, 5), torch.zeros(7, 4), 1.0)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        jcl_enqueue_keys(q)
    with pytest.raises(ValueError, match="lam"):
        jcl_loss(q, torch.zeros(3, 2, 5), queue, -1.0)
    with pytest.raises(ValueError, match="temperature"):
        JCLLoss(0.0)
    with pytest.raises(ValueError, match="temperature"):
        InfoNCEQueueLoss(-1.0)


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, Algorithm 1) by its definition: for each of the 2B anchors, -log of its
    positive's exp(cos / tau) over the sum of exp(cos / tau) of every other view, averaged over the anchors."""
    views = list(z1) + list(z2)
    n = len(z1)
    total = torch.zeros((), dtype=z1.dtype)
    for i, anchor in enumerate(views):
        positive = (i + n) % (2 * n)
        sims = [F.cosine_similarity(anchor, views[k], dim=0) / tau for k in range(2 * n) if k != i]
        total = total - (
            F.cosine_similarity(anchor, views[positive], dim=0) / tau - torch.logsumexp(torch.stack(sims), 0)
        )
    return total / (2 * n)


def test_monai_contrastive_loss_is_simclr_nt_xent() -> None:
    """MONAI's ContrastiveLoss is the NT-Xent of SimCLR, whichever view goes first (so s4mi reuses it)."""
    from monai.losses import ContrastiveLoss

    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, D, generator=g, dtype=torch.float64)
    for tau in (0.1, 0.5, 1.0):
        want = naive_nt_xent(z1, z2, tau).item()
        # rel 1e-7, not 1e-10: MONAI holds the temperature as a float32 tensor (0.1 -> 0.10000000149)
        assert ContrastiveLoss(tau)(z1, z2).item() == pytest.approx(want, rel=1e-7)
        assert ContrastiveLoss(tau)(z2, z1).item() == pytest.approx(naive_nt_xent(z2, z1, tau).item(), rel=1e-7)
        assert ContrastiveLoss(tau)(z2, z1).item() == pytest.approx(want, rel=1e-7)  # symmetric in the views


def test_nt_xent_hand_computed() -> None:
    """Two images, orthogonal unit embeddings, each view equal to its pair: cos 1 to the positive, 0 to the two
    negatives, so every anchor's loss is -log(e^(1/tau) / (e^(1/tau) + 2))."""
    from monai.losses import ContrastiveLoss

    z = torch.eye(2, dtype=torch.float64)
    tau = 0.5
    want = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    assert ContrastiveLoss(tau)(z, z.clone()).item() == pytest.approx(want, rel=1e-12)
