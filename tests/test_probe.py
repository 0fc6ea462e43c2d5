from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from s4mi.probe import knn_probe, knn_scores, linear_probe, probe_metrics


def naive_knn(
    train_f: list[list[float]], train_y: list, query: list[float], k: int, t: float, c: int, multilabel: bool
):
    """DINO's weighted cosine kNN, one query, written as loops."""

    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    sims = sorted(((cos(query, f), j) for j, f in enumerate(train_f)), reverse=True)[:k]
    votes = [0.0] * c
    total = 0.0
    for s, j in sims:
        w = math.exp(s / t)
        total += w
        for cls in range(c):
            hit = train_y[j][cls] if multilabel else float(train_y[j] == cls)
            votes[cls] += w * hit
    return [v / total for v in votes]


@pytest.mark.parametrize("multilabel", [False, True])
def test_knn_matches_naive_loop(multilabel: bool) -> None:
    g = torch.Generator().manual_seed(0)
    train_f, query_f = torch.randn(30, 5, generator=g), torch.randn(7, 5, generator=g)
    train_y = (torch.rand(30, 3, generator=g) > 0.5).long() if multilabel else torch.randint(0, 3, (30,), generator=g)
    scores = knn_scores(train_f, train_y, query_f, num_classes=3, k=4, temperature=0.07, chunk=3)
    ref = [naive_knn(train_f.tolist(), train_y.tolist(), q, 4, 0.07, 3, multilabel) for q in query_f.tolist()]
    assert scores.shape == (7, 3)
    assert torch.allclose(scores, torch.tensor(ref), rtol=1e-5)


def test_knn_auc_ranks_class_shares_not_closeness() -> None:
    # a class-1 training point sits inside the class-0 cluster; the class-1 queries are far from every point. Raw vote
    # sums give the class-0 queries the larger class-1 score (one very close class-1 neighbour) and AUC 0; the
    # weighted shares rank the class-1 queries first
    train_f = torch.tensor([[1.0, 0.0], [1.0, 0.01], [1.0, -0.01], [1.0, 0.05], [0.0, 1.0]])
    train_y = torch.tensor([0, 0, 0, 1, 1])
    val_f = torch.tensor([[1.0, 0.02], [1.0, 0.03], [0.3, 1.0], [0.35, 1.0]])
    val_y = torch.tensor([0, 0, 1, 1])
    scores = knn_scores(train_f, train_y, val_f, num_classes=2, k=5, temperature=0.07)
    assert torch.allclose(scores.sum(1), torch.ones(4))
    assert knn_probe(train_f, train_y, val_f, val_y, k=5)["auc"] == pytest.approx(1.0)
    sims = F.normalize(val_f, dim=1) @ F.normalize(train_f, dim=1).T
    raw = (sims / 0.07).exp() @ F.one_hot(train_y, 2).float()
    assert probe_metrics(raw, val_y)["auc"] == pytest.approx(0.5)  # unnormalised sums: class 0 AUC 1, class 1 AUC 0


def test_knn_accuracy_and_f1_on_hand_made_clusters() -> None:
    # two tight clusters along x and y; queries 0, 1 near x (class 0), query 2 near y (class 1), query 3 near y
    # but labelled 0: accuracy 3/4, F1 class 0 = 2*2/(2*2+0+1) = 0.8, class 1 = 2*1/(2*1+1+0) = 2/3
    train_f = torch.tensor([[1.0, 0.01], [1.0, -0.01], [0.01, 1.0], [-0.01, 1.0]])
    train_y = torch.tensor([0, 0, 1, 1])
    val_f = torch.tensor([[2.0, 0.1], [1.0, 0.2], [0.1, 3.0], [0.2, 1.0]])
    out = knn_probe(train_f, train_y, val_f, torch.tensor([0, 0, 1, 0]), k=2)
    assert out["acc"] == pytest.approx(0.75)
    assert out["f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_knn_multilabel_auc_perfect_when_neighbours_share_labels() -> None:
    train_f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train_y = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]])
    val_f = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.8, 0.0], [0.0, 0.7]])
    out = knn_probe(train_f, train_y, val_f, torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]]), k=2)
    assert set(out) == {"auc"} and out["auc"] == pytest.approx(1.0)


def test_linear_probe_separable_multiclass_and_multilabel() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    y = torch.arange(60) % 3
    f = centres[y] + 0.3 * torch.randn(60, 3, generator=g)
    out = linear_probe(f[:40], y[:40], f[40:], y[40:])
    assert out["acc"] == 1.0 and out["f1"] == pytest.approx(1.0) and out["auc"] == pytest.approx(1.0)
    # multi-label: finding c present iff feature c > 0
    f2 = torch.randn(80, 3, generator=g)
    y2 = (f2 > 0).long()
    assert linear_probe(f2[:60], y2[:60], f2[60:], y2[60:])["auc"] > 0.97


def test_linear_probe_at_chance_on_noise_and_does_not_touch_global_rng() -> None:
    g = torch.Generator().manual_seed(2)
    f = torch.randn(100, 8, generator=g)
    y = torch.randint(0, 2, (100,), generator=g)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    out = linear_probe(f[:70], y[:70], f[70:], y[70:])
    assert torch.equal(torch.random.get_rng_state(), before)
    # the naive check: the probe predicts the validation set no better than a constant would do by much
    majority = max(float((y[70:] == c).float().mean()) for c in (0, 1))
    assert out["acc"] <= majority + 0.2


def test_shape_errors_name_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(2, 5\)"):
        knn_scores(torch.zeros(4, 3), torch.zeros(4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="4 training features but 3"):
        linear_probe(torch.zeros(4, 3), torch.zeros(3), torch.zeros(2, 3), torch.zeros(2))


def test_one_hot_labels_with_multilabel_false_score_as_class_indices() -> None:
    g = torch.Generator().manual_seed(3)
    f = torch.randn(40, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    one_hot = torch.nn.functional.one_hot(y, 3)
    ref = knn_probe(f[:30], y[:30], f[30:], y[30:], num_classes=3, k=5)
    assert knn_probe(f[:30], one_hot[:30], f[30:], one_hot[30:], k=5, multilabel=False) == ref
    assert set(ref) == {"acc", "f1", "auc"}
