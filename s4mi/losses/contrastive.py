r"""Contrastive losses against a queue of negative keys: MoCo v2 InfoNCE and Joint Contrastive Learning (JCL).

Both follow MoCo (He et al., CVPR 2020; MoCo v2, Chen et al., arXiv 2003.04297): a query ``q`` from the student
("query encoder") is classified against its positive key from the EMA teacher ("key encoder") and ``K`` negatives
from a queue (:class:`s4mi.networks.KeyQueue`). Every embedding is assumed to be L2-normalised already (the
encoders' outputs are, see :class:`s4mi.networks.EncoderWithHead`); the losses do not normalise.

Only the query gets a gradient: keys, queue and their statistics are detached, as the key encoder runs under
``torch.no_grad()`` in MoCo.

SimCLR's NT-Xent (Chen et al., ICML 2020, eq. 1; in-batch negatives, both views with gradients) is not written
here: :class:`monai.losses.ContrastiveLoss` computes exactly that loss (the mean of
:math:`-\log \frac{\exp(s_{ij}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)}` over the ``2B`` anchors, ``s`` the cosine
similarity), as ``tests/losses/test_contrastive.py`` checks against a loop over the anchors. s4mi's SimCLR and
SRCL trainers use it. It exponentiates without the log-sum-exp shift, which cannot overflow float32 for
:math:`\tau \ge 0.02` (:math:`e^{1/\tau} \le e^{50}`, summed over the anchors still far below its 3e38); the
trainers pass it float32 projections, also under AMP, where float16 would overflow for :math:`\tau` below about 0.09.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce_queue_loss", "jcl_loss", "jcl_enqueue_keys", "InfoNCEQueueLoss", "JCLLoss"]


def _check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


def _check_query_and_queue(q: torch.Tensor, queue: torch.Tensor) -> None:
    if q.ndim != 2:
        raise ValueError(f"q must be B x D, got shape {tuple(q.shape)}")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"queue must be K x D with D = {q.shape[1]} as q, got q {tuple(q.shape)}, queue {tuple(queue.shape)}"
        )


def _queue_cross_entropy(q: torch.Tensor, l_pos: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of ``[l_pos, q . queue] / tau`` with the positive (column 0) as target, mean over the batch."""
    l_neg = q @ queue.detach().T  # B x K
    logits = torch.cat([l_pos.unsqueeze(1), l_neg], dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


def info_nce_queue_loss(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    r"""MoCo v2 InfoNCE loss with a queue of negatives (He et al., CVPR 2020, eq. 1).

    .. math:: \mathcal{L} = -\frac{1}{B} \sum_b \log
        \frac{\exp(q_b \cdot k_b / \tau)}{\exp(q_b \cdot k_b / \tau) + \sum_{j=1}^{K} \exp(q_b \cdot n_j / \tau)}

    Args:
        q: queries, ``B x D``, L2-normalised (not checked).
        k: positive keys, ``B x D``, L2-normalised (not checked); detached.
        queue: negative keys, ``K x D``, L2-normalised (not checked); detached.
        temperature: :math:`\tau` (0.07 in MoCo and S2MTS2; 0.2 in MoCo v2).

    Returns:
        scalar loss (mean over the batch).

    Raises:
        ValueError: on mismatched shapes (the message gives them) or a non-positive temperature.
    """
    temperature = _check_temperature(temperature)
    _check_query_and_queue(q, queue)
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q (B x D), got q {tuple(q.shape)}, k {tuple(k.shape)}")
    l_pos = (q * k.detach()).sum(dim=1)
    return _queue_cross_entropy(q, l_pos, queue, temperature)


def jcl_enqueue_keys(keys: torch.Tensor) -> torch.Tensor:
    r"""The keys S2MTS2 puts in the queue: the plain mean of each image's ``M`` key embeddings.

    The reference code (FBLADL/semi-chest, ``builder_fa.MoCo``) enqueues this mean without re-normalising it, so
    the queue holds vectors of norm at most 1 (shorter when the key views disagree). That is kept here, for
    fidelity; the negatives then weigh slightly less in the logits than unit keys would.

    Args:
        keys: ``B x M x D``, each key L2-normalised.

    Returns:
        ``B x D`` detached means :math:`\mu_b`.

    Raises:
        ValueError: if ``keys`` is not 3-D.
    """
    if keys.ndim != 3:
        raise ValueError(f"keys must be B x M x D, got shape {tuple(keys.shape)}")
    return keys.detach().mean(dim=1)


def jcl_loss(
    q: torch.Tensor,
    keys: torch.Tensor,
    queue: torch.Tensor,
    lam: float,
    temperature: float = 0.07,
    unbiased: bool = False,
) -> torch.Tensor:
    r"""Joint Contrastive Learning loss (Cai et al., NeurIPS 2020) as S2MTS2 runs it (Liu et al., MLMI 2021).

    JCL replaces the single positive key by the Gaussian of an image's ``M`` key views, with mean :math:`\mu_b`
    and covariance :math:`\Sigma_b`, and minimises an upper bound of the InfoNCE loss averaged over infinitely
    many keys drawn from it. As in S2MTS2's code (FBLADL/semi-chest, ``utils/builders/builder_fa.py``):

    .. math::
        s_b = q_b \cdot \Big(\mu_b + \frac{\lambda}{2\tau} \Sigma_b q_b\Big), \qquad
        \mathcal{L} = \frac{1}{B} \sum_b \Big[ -\log
        \frac{\exp(s_b / \tau)}{\exp(s_b / \tau) + \sum_{j=1}^{K} \exp(q_b \cdot n_j / \tau)}
        + \frac{\lambda}{2\tau} \frac{q_b^\top \Sigma_b q_b}{\tau} \Big]

    with :math:`\lambda` ramped linearly to 2 over pretraining in S2MTS2 (:math:`\lambda = 2 (e+1)/E`).
    :math:`\Sigma_b` is never formed: with :math:`c_{bm} = k_{bm} - \mu_b`,
    :math:`q^\top \Sigma q = \frac{1}{N} \sum_m (c_m \cdot q)^2`, which is all the loss needs, in
    :math:`O(BMD)` instead of :math:`O(BD^2)`.

    Covariance normalisation: by default :math:`N = M`, as S2MTS2's code divides (``utils/builders/builder_fa.py``
    of FBLADL/semi-chest), so lambda means what it means there. ``unbiased=True`` uses :math:`N = M - 1`, the
    sample covariance (with :math:`M = 2` that is twice the default :math:`\Sigma`: the default loss at
    :math:`\lambda` equals the unbiased one at :math:`\lambda / 2`). :math:`\Sigma = 0` when :math:`M = 1` either
    way (a single key has no spread; the loss is then InfoNCE against :math:`\mu = k`).

    Gradients flow only through ``q`` (both of its occurrences in :math:`s_b` and in the extra term, as in the
    reference code); ``keys``, ``queue``, :math:`\mu` and :math:`\Sigma` are detached. Enqueue
    :func:`jcl_enqueue_keys` (the means) afterwards, not every key.

    Args:
        q: queries, ``B x D``, L2-normalised (not checked).
        keys: key embeddings, ``B x M x D``: ``M`` augmented key views per image, each L2-normalised (not
            checked). The reference code stacks the views as ``(M B) x D``; pass ``k.view(M, B, D).transpose(0, 1)``.
        queue: negative keys, ``K x D``.
        lam: :math:`\lambda \ge 0`, the weight of the covariance.
        temperature: :math:`\tau`.
        unbiased: divide the covariance by ``M - 1`` (True) or ``M`` (False, default: the reference code).

    Returns:
        scalar loss (mean over the batch).

    Raises:
        ValueError: on mismatched shapes (the message gives them), a negative ``lam`` or a non-positive
            temperature.
    """
    temperature = _check_temperature(temperature)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    _check_query_and_queue(q, queue)
    if keys.ndim != 3 or keys.shape[0] != q.shape[0] or keys.shape[2] != q.shape[1] or keys.shape[1] < 1:
        raise ValueError(
            f"keys must be B x M x D with B, D as q's and M >= 1, got q {tuple(q.shape)}, keys {tuple(keys.shape)}"
        )
    keys = keys.detach()
    m = keys.shape[1]
    mu = keys.mean(dim=1)  # B x D
    centred = keys - mu.unsqueeze(1)  # B x M x D
    denom = (m - 1 if unbiased else m) if m > 1 else 1
    proj = torch.einsum("bmd,bd->bm", centred, q)  # c_bm . q_b
    q_sigma_q = proj.pow(2).sum(dim=1) / denom  # B
    scale = 0.5 * lam / temperature
    l_pos = (q * mu).sum(dim=1) + scale * q_sigma_q
    return _queue_cross_entropy(q, l_pos, queue, temperature) + scale * q_sigma_q.mean() / temperature


class InfoNCEQueueLoss(torch.nn.Module):
    r"""Module form of :func:`info_nce_queue_loss`, for bundle configs.

    Args:
        temperature: :math:`\tau`.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        return info_nce_queue_loss(q, k, queue, self.temperature)


class JCLLoss(torch.nn.Module):
    r"""Module form of :func:`jcl_loss`, for bundle configs; ``lam`` is passed per call since it is ramped.

    Args:
        temperature: :math:`\tau`.
        unbiased: covariance divided by ``M - 1`` (True) or by ``M`` as in S2MTS2's code (False, default).
    """

    def __init__(self, temperature: float = 0.07, unbiased: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.unbiased = unbiased

    def forward(self, q: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, lam: float) -> torch.Tensor:
        return jcl_loss(q, keys, queue, lam, self.temperature, self.unbiased)
