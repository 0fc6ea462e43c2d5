"""Probes of frozen features: is a self-supervised backbone learning anything about the labels?

Two standard read-outs, both on features that are never trained here:

- :func:`knn_probe`: the weighted cosine k-nearest-neighbour classifier of DINO's evaluation (Caron et al.,
  "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, ``eval_knn.py``; after Wu et al.
  2018): L2-normalised features, the ``k`` = 20 most cosine-similar training features of each query, each
  neighbour voting with weight ``exp(sim / T)``, ``T`` = 0.07.
- :func:`linear_probe`: logistic regression on the standardised features (softmax for multi-class, sigmoid per
  class for multi-label), fitted full-batch with L-BFGS, its L2 weight chosen on a seeded held-out share of the
  probe set itself (so the validation set only ever scores the chosen probe).

Labels are either class indices ``B`` (multi-class) or multi-hot ``B C`` (multi-label findings, as the chest
X-ray phantom). Multi-class scores: top-1 accuracy, macro F1, one-vs-rest mean AUC; multi-label: mean AUC over
the classes whose AUC is defined (:func:`s4mi.metrics.mean_auc`, MONAI's ROC AUC per class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s4mi.metrics import macro_confusion_metric, mean_auc

__all__ = ["knn_scores", "knn_probe", "fit_linear_probe", "linear_probe", "probe_metrics", "is_multilabel"]


def is_multilabel(y: torch.Tensor, multilabel: bool | None = None) -> bool:
    """``multilabel`` if given, else True for labels ``B C`` (C > 1), False for class indices ``B`` (or ``B 1``).

    One-hot multi-class labels ``B C`` (the skin bundles') need ``multilabel=False``.
    """
    return (y.ndim == 2 and y.shape[1] > 1) if multilabel is None else multilabel


def _class_indices(y: torch.Tensor, what: str) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:  # one-hot
        y = y.argmax(1)
    if y.ndim != 1:
        raise ValueError(f"{what}: expected class indices of shape B or multi-hot labels B C, got {tuple(y.shape)}")
    return y.long()


def _check(train_f: torch.Tensor, train_y: torch.Tensor, query_f: torch.Tensor) -> None:
    if train_f.ndim != 2 or query_f.ndim != 2 or train_f.shape[1] != query_f.shape[1]:
        raise ValueError(
            f"features must be B F with the same F, got train {tuple(train_f.shape)} and query {tuple(query_f.shape)}"
        )
    if len(train_y) != len(train_f):
        raise ValueError(f"{len(train_f)} training features but {len(train_y)} training labels")
    if len(train_f) == 0:
        raise ValueError("the probe set is empty: no labelled training features")


def knn_scores(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    query_f: torch.Tensor,
    num_classes: int | None = None,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
    multilabel: bool | None = None,
) -> torch.Tensor:
    """Class scores of DINO's weighted cosine kNN: the weighted share of each class among the ``k`` neighbours.

    ``score[q, c] = sum_{j in top-k(q)} w_j y_jc / sum_j w_j`` with ``w_j = exp(cos(q, j) / T)`` and ``y_jc`` the
    multi-hot label or ``[y_j = c]``. DINO ranks classes by the vote sums (the numerator); dividing by the total
    weight leaves each query's top-1 class unchanged but makes the scores comparable across queries, which AUC
    needs: unnormalised sums also rank a query by how close its neighbours are (``exp(cos / 0.07)`` varies 1.8x
    between cos 0.95 and 0.99), so atypical images of a rare class scored below typical images of another, and the
    probe's AUC could fall below 0.5 on features that carry no information.

    Args:
        train_f: training (probe-set) features ``N F``.
        train_y: class indices ``N`` or multi-hot labels ``N C``.
        query_f: query features ``B F``.
        num_classes: ``C`` for class indices (default: ``max(train_y) + 1``).
        k: neighbours (clipped to ``N``).
        temperature: ``T``.
        chunk: queries per similarity block (memory).
        multilabel: whether ``train_y`` is multi-hot (default: inferred, see :func:`is_multilabel`).

    Returns:
        scores ``B C`` (float32).
    """
    _check(train_f, train_y, query_f)
    train_n = F.normalize(train_f.float(), dim=1)
    query_n = F.normalize(query_f.float(), dim=1)
    multilabel = is_multilabel(train_y, multilabel)
    if multilabel:
        targets = train_y.float().to(train_n.device)
    else:
        idx = _class_indices(train_y, "knn_scores").to(train_n.device)
        targets = F.one_hot(idx, num_classes or int(idx.max()) + 1).float()
    k = min(k, len(train_n))
    out = []
    for start in range(0, len(query_n), chunk):
        sim = query_n[start : start + chunk] @ train_n.T  # b N
        top_sim, top_idx = sim.topk(k, dim=1)  # b k
        w = (top_sim / temperature).exp()
        votes = (w.unsqueeze(2) * targets[top_idx]).sum(1)  # b C
        out.append(votes / w.sum(1, keepdim=True))
    return torch.cat(out)


def probe_metrics(scores: torch.Tensor, y: torch.Tensor, multilabel: bool | None = None) -> dict[str, float]:
    """``{"auc"}`` for multi-hot ``y`` (mean AUC), ``{"acc", "f1", "auc"}`` for class indices or one-hot ``y``
    (top-1, macro F1, one-vs-rest mean AUC)."""
    scores = scores.detach().float().cpu()
    if is_multilabel(y, multilabel):
        return {"auc": mean_auc(scores, y.cpu())[0]}
    idx = _class_indices(y, "probe_metrics").cpu()
    if idx.numel() and int(idx.max()) >= scores.shape[1]:
        raise ValueError(f"label {int(idx.max())} out of range for {scores.shape[1]} class scores")
    target = F.one_hot(idx, scores.shape[1])
    pred = F.one_hot(scores.argmax(1), scores.shape[1])
    return {
        "acc": float((scores.argmax(1) == idx).float().mean()),
        "f1": macro_confusion_metric(pred, target, "f1 score"),  # local: the probe runs on rank 0 alone under DDP
        "auc": mean_auc(scores, target)[0],
    }


def knn_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    val_f: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int | None = None,
    k: int = 20,
    temperature: float = 0.07,
    multilabel: bool | None = None,
) -> dict[str, float]:
    """:func:`knn_scores` of ``val_f`` scored against ``val_y`` (:func:`probe_metrics`)."""
    multilabel = is_multilabel(train_y, multilabel)
    if num_classes is None and not multilabel:
        num_classes = _num_classes(train_y, val_y)
    scores = knn_scores(train_f, train_y, val_f, num_classes, k, temperature, multilabel=multilabel)
    return probe_metrics(scores, val_y, multilabel)


def _num_classes(train_y: torch.Tensor, val_y: torch.Tensor) -> int:
    if train_y.ndim == 2 and train_y.shape[1] > 1:
        return int(train_y.shape[1])
    return int(max(_class_indices(train_y, "probe").max(), _class_indices(val_y, "probe").max())) + 1


def _loss(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y.float()) if multilabel else F.cross_entropy(logits, y)


def fit_linear_probe(
    f: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 200, multilabel: bool | None = None
) -> torch.nn.Linear:
    """Logistic regression ``F -> C`` fitted full-batch with L-BFGS (strong Wolfe line search).

    Loss: mean cross-entropy (class indices) or mean binary cross-entropy (multi-hot) plus ``l2 * ||W||^2``.
    Deterministic: zero initialisation, no random draw.

    Args:
        f: features ``N F`` (standardise them first).
        y: class indices ``N`` or multi-hot ``N C``.
        num_classes: ``C``.
        l2: weight of the squared L2 norm of the weights (not the bias).
        max_iter: L-BFGS iterations.
        multilabel: sigmoid heads (multi-hot ``y``) or one softmax (default: inferred, :func:`is_multilabel`).
    """
    multilabel = is_multilabel(y, multilabel)
    target = y.float() if multilabel else _class_indices(y, "fit_linear_probe")
    # skip_init: nn.Linear's own initialisation would draw from the global generator
    head = torch.nn.utils.skip_init(torch.nn.Linear, f.shape[1], num_classes, device=f.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(head(f), target, multilabel) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head


def _scores(head: torch.nn.Linear, f: torch.Tensor, multilabel: bool) -> torch.Tensor:
    with torch.no_grad():
        logits = head(f)
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    val_f: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int | None = None,
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1),
    held_out: float = 0.2,
    seed: int = 0,
    max_iter: int = 200,
    multilabel: bool | None = None,
) -> dict[str, float]:
    """Linear probe: L2 chosen on a held-out share of the probe set, refitted on all of it, scored on ``val``.

    Features are standardised with the probe set's mean and standard deviation. The L2 weight maximising the
    held-out share's mean AUC (multi-label) or accuracy (multi-class) is kept; the validation set is never used
    to choose it. With fewer than 5 probe items (or ``held_out`` = 0) the grid's median is used.

    Args:
        train_f: probe-set features ``N F``.
        train_y: class indices ``N`` or multi-hot ``N C``.
        val_f: validation features ``B F``.
        val_y: validation labels, as ``train_y``.
        num_classes: ``C`` for class indices (default: the largest index seen + 1).
        l2_grid: candidate L2 weights.
        held_out: share of the probe set held out to choose the L2 weight.
        seed: seeds the held-out split (a local generator: the global RNG is not touched).
        max_iter: L-BFGS iterations per fit.
        multilabel: whether the labels are multi-hot (default: inferred, see :func:`is_multilabel`).

    Returns:
        :func:`probe_metrics` of the refitted probe on the validation set.
    """
    _check(train_f, train_y, val_f)
    multilabel = is_multilabel(train_y, multilabel)
    if multilabel:
        num_classes = train_y.shape[1]
    elif num_classes is None:
        num_classes = _num_classes(train_y, val_y)
    train_f, val_f = train_f.float(), val_f.float().to(train_f.device)
    train_y = train_y.to(train_f.device)
    mean, std = train_f.mean(0), train_f.std(0, unbiased=False) + 1e-6
    train_f, val_f = (train_f - mean) / std, (val_f - mean) / std
    n_held = int(round(held_out * len(train_f)))
    if len(train_f) < 5 or n_held == 0:
        l2 = sorted(l2_grid)[len(l2_grid) // 2]
    else:
        perm = torch.randperm(len(train_f), generator=torch.Generator().manual_seed(seed)).to(train_f.device)
        fit_i, held_i = perm[n_held:], perm[:n_held]
        key = "auc" if multilabel else "acc"
        best: tuple[float, float] | None = None
        for cand in l2_grid:
            head = fit_linear_probe(train_f[fit_i], train_y[fit_i], num_classes, cand, max_iter, multilabel)
            value = probe_metrics(_scores(head, train_f[held_i], multilabel), train_y[held_i], multilabel)[key]
            value = float("-inf") if value != value else value  # NaN (undefined AUC) ranks last
            if best is None or value > best[0]:
                best = (value, cand)
        assert best is not None
        l2 = best[1]
    head = fit_linear_probe(train_f, train_y, num_classes, l2, max_iter, multilabel)
    return probe_metrics(_scores(head, val_f, multilabel), val_y, multilabel)
