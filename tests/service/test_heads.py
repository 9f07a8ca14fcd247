"""Adapter heads against closed-form and scikit-learn references on synthetic embeddings; head selection
by leave-one-out on constructed cases; the out-of-support threshold; Grad-CAM of a head from features."""
from __future__ import annotations

import numpy as np
import pytest

from service.adapters.heads import (
    CENTRED,
    COSINE,
    HEADS,
    LOGISTIC,
    PROTOTYPE,
    Head,
    cross_validate,
    distances,
    embedding_blocks,
    feature_gradient,
    fit_head,
    fit_logistic,
    gradcam,
    held_out_logistic_heads,
    held_out_masks,
    held_out_mean_heads,
    held_out_scores,
    l2_normalise,
    leave_one_out_accuracy,
    out_of_support,
    select_head,
    softmax_neg,
    upsample_bilinear,
)


def _clusters(seed=0, k=3, shots=5, d=16, spread=0.1):
    """k tight clusters around random directions, at varied norms."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = np.repeat(np.arange(k), shots)
    x = centres[y] + spread * rng.normal(size=(len(y), d))
    return x * rng.uniform(0.5, 2.0, size=(len(y), 1)), y


def _unit(v):
    return v / np.linalg.norm(v)


def test_cosine_and_centred_heads_match_their_closed_forms():
    x, y = _clusters()
    q = np.random.default_rng(9).normal(size=(4, x.shape[1]))

    head = fit_head(COSINE, x, y, 3)
    protos = np.stack([_unit(np.mean([_unit(v) for v in x[y == k]], axis=0)) for k in range(3)])
    np.testing.assert_allclose(head.arrays["prototypes"], protos, rtol=1e-5, atol=1e-6)
    cos = np.array([[_unit(a) @ p for p in protos] for a in q])
    np.testing.assert_allclose(head.logits(q), 10.0 * cos, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head.distances(q), 1.0 - cos, atol=1e-6)
    np.testing.assert_allclose(head.probabilities(q).sum(1), 1.0, atol=1e-9)

    head = fit_head(CENTRED, x, y, 3)
    mu = x.mean(0)
    protos = np.stack([_unit(np.mean([_unit(v - mu) for v in x[y == k]], axis=0)) for k in range(3)])
    np.testing.assert_allclose(head.arrays["mean"], mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head.arrays["prototypes"], protos, rtol=1e-5, atol=1e-6)
    cos = np.array([[_unit(a - mu) @ p for p in protos] for a in q])
    np.testing.assert_allclose(head.logits(q), 10.0 * cos, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["squared_euclidean", "euclidean", "cosine"])
def test_prototype_head_is_the_service_s_old_head(metric):
    x, y = _clusters(seed=1)
    head = fit_head(PROTOTYPE, x, y, 3, distance=metric, temperature=2.0)
    means = np.stack([x[y == k].mean(0) for k in range(3)])
    np.testing.assert_allclose(head.arrays["prototypes"], means, rtol=1e-5, atol=1e-5)
    q = np.random.default_rng(2).normal(size=(5, x.shape[1]))
    np.testing.assert_allclose(head.probabilities(q), softmax_neg(distances(q, means, metric), 2.0), atol=1e-5)
    labels = [str(k) for k in y]
    accuracy, _, method = cross_validate(PROTOTYPE, x, y, np.arange(len(y)), 3, distance=metric)
    assert method == "leave-one-out"
    assert accuracy == pytest.approx(leave_one_out_accuracy(x.astype(np.float32), labels, metric))


@pytest.fixture(params=["newton", "accelerated"])
def logistic_solver(request, monkeypatch):
    """Both solvers of fit_logistic: Newton (small support sets) and accelerated gradient (large ones)."""
    if request.param == "accelerated":
        monkeypatch.setattr("service.adapters.heads.NEWTON_MAX_PARAMS", 0)
    return request.param


def test_logistic_head_matches_scikit_learn(logistic_solver):
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(3)
    for n_per, d, k in [(5, 32, 3), (4, 64, 6)]:
        y = np.repeat(np.arange(k), n_per)
        z = l2_normalise(rng.normal(size=(k, d))[y] * 0.6 + rng.normal(size=(len(y), d)))
        weights, bias = fit_logistic(z, y, k, c=10.0)
        ref = sklearn.LogisticRegression(C=10.0, tol=1e-10, max_iter=10_000).fit(z, y)
        np.testing.assert_allclose(weights, ref.coef_, atol=1e-5)
        np.testing.assert_allclose(bias, ref.intercept_ - ref.intercept_.mean(), atol=1e-5)
        head = fit_head(LOGISTIC, z * 3.0, y, k)  # the head normalises its input itself
        q = rng.normal(size=(7, d))
        np.testing.assert_allclose(head.probabilities(q), ref.predict_proba(l2_normalise(q)), atol=1e-5)


def test_held_out_logistic_fits_match_fits_on_each_subset(logistic_solver):
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(4), 5)
    z = l2_normalise(rng.normal(size=(4, 48))[y] * 0.5 + rng.normal(size=(len(y), 48)))
    keep = ~np.eye(len(y), dtype=bool)  # leave one out
    whole = fit_head(LOGISTIC, z, y, 4)
    held = held_out_logistic_heads(z, y, 4, keep, warm=whole)
    for rows, head in zip(keep, held, strict=True):
        alone_w, alone_b = fit_logistic(z[rows], y[rows], 4, c=10.0)
        # warm-started held-out fits stop at tol 1e-3: their answers, not their last digits, must agree
        np.testing.assert_allclose(head.arrays["weights"], alone_w, atol=2e-3)
        np.testing.assert_allclose(head.probabilities(z), fit_head(LOGISTIC, z[rows], y[rows], 4).probabilities(z),
                                   atol=2e-3)
        np.testing.assert_allclose(head.arrays["bias"], alone_b, atol=2e-3)


@pytest.mark.parametrize("kind", [PROTOTYPE, COSINE, CENTRED])
def test_held_out_mean_heads_are_the_heads_of_each_subset(kind):
    x, y = _clusters(seed=8)
    keep = ~np.eye(len(y), dtype=bool)
    keep[3, :] = True  # a row that keeps everything: the head of the whole set
    for rows, head in zip(keep, held_out_mean_heads(kind, x, y, 3, keep, distance="euclidean"), strict=True):
        alone = fit_head(kind, x[rows], y[rows], 3, distance="euclidean")
        for name, value in alone.arrays.items():
            np.testing.assert_allclose(head.arrays[name], value, rtol=1e-5, atol=1e-6)
        assert head.params == alone.params
    reference = x[y == 1].mean(axis=0) if kind == PROTOTYPE else None
    if reference is not None:  # the whole-set row against the plain class mean
        np.testing.assert_allclose(held_out_mean_heads(kind, x, y, 3, keep)[3].arrays["prototypes"][1], reference,
                                   rtol=1e-5)


@pytest.mark.parametrize("kind,metric", [(PROTOTYPE, "squared_euclidean"), (PROTOTYPE, "euclidean"),
                                         (PROTOTYPE, "cosine"), (COSINE, None), (CENTRED, None), (LOGISTIC, None)])
@pytest.mark.parametrize("grouped", [False, True])
def test_held_out_scores_are_the_held_out_heads_scores(kind, metric, grouped):
    """The Gram-matrix scores equal those of the heads built on each fold's rows, row by held-out row."""
    x, y = _clusters(seed=11, d=40, spread=0.6)
    # grouped: pairs of one class's shots are held out together (as /adapt does with augmented copies)
    groups = y * 100 + (np.arange(len(y)) % 5) // 2 if grouped else np.arange(len(y))
    outs, _ = held_out_masks(y, groups)
    fold, row = np.nonzero(outs)
    params = {"distance": metric or "squared_euclidean", "temperature": 1.5}
    full = fit_head(kind, x, y, 3, **params)
    logits, dists = held_out_scores(kind, x, y, 3, ~outs, fold, row, full=full, **params)
    if kind == LOGISTIC:
        heads = held_out_logistic_heads(x, y, 3, ~outs, warm=full)
    else:
        heads = held_out_mean_heads(kind, x, y, 3, ~outs, **params)
    for m, (f, i) in enumerate(zip(fold, row, strict=True)):
        np.testing.assert_allclose(logits[m], heads[f].logits(x[i : i + 1])[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dists[m], heads[f].distances(x[i : i + 1])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,metric", [(PROTOTYPE, "squared_euclidean"), (PROTOTYPE, "euclidean"),
                                         (PROTOTYPE, "cosine"), (COSINE, None), (CENTRED, None), (LOGISTIC, None)])
def test_logit_gradient_matches_finite_differences(kind, metric):
    x, y = _clusters(seed=4, d=6)
    head = fit_head(kind, x, y, 3, distance=metric or "squared_euclidean", temperature=1.5)
    e = np.random.default_rng(5).normal(size=(2, 6))
    target = np.array([0, 2])
    grad = head.logit_gradient(e, target)
    h = 1e-6
    for n in range(2):
        numeric = np.zeros(6)
        for i in range(6):
            step = np.zeros(6)
            step[i] = h
            up = head.logits((e[n] + step)[None])[0, target[n]]
            down = head.logits((e[n] - step)[None])[0, target[n]]
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad[n], numeric, rtol=1e-4, atol=1e-5)


def test_selection_picks_logistic_where_only_a_linear_boundary_separates():
    # x1 - x2 is the class (+-1); both coordinates share a large nuisance: the class means differ along
    # x1 only, so every nearest-prototype head is close to chance, while a linear boundary separates them.
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 10)
    nuisance = rng.normal(scale=3.0, size=20)
    signal = np.where(y == 0, 1.0, -1.0)
    x = np.stack([signal + nuisance, nuisance, np.full(20, 1.0)], axis=1)
    chosen = select_head(x, y, 2)
    acc = chosen.record["accuracy"]
    assert chosen.head.kind == LOGISTIC and chosen.record["chosen"] == LOGISTIC
    others = max(acc[k] for k in (COSINE, PROTOTYPE, CENTRED))
    assert acc[LOGISTIC] >= 0.85 and acc[LOGISTIC] >= others + 0.15, acc
    assert chosen.record["method"] == "leave-one-out" and chosen.record["evaluated"] == 20
    assert "logistic" in chosen.record["why"] and chosen.accuracy == acc[LOGISTIC]


def test_selection_picks_prototype_when_classes_differ_by_norm_and_breaks_ties_by_simplicity():
    # the same direction at two norms: cosine and logistic (on normalised embeddings) cannot tell them
    # apart; plain and centred prototypes both can, and the tie goes to the simpler one.
    rng = np.random.default_rng(7)
    u = _unit(rng.normal(size=8))
    y = np.repeat([0, 1], 6)
    x = np.where(y[:, None] == 0, 1.0, 5.0) * u + 0.05 * rng.normal(size=(12, 8))
    chosen = select_head(x, y, 2, distance="squared_euclidean")
    acc = chosen.record["accuracy"]
    assert acc[PROTOTYPE] == acc[CENTRED] == 1.0 and acc[COSINE] < 1.0, acc
    assert chosen.head.kind == PROTOTYPE and "tied with centred" in chosen.record["why"]


def test_one_shot_per_class_takes_cosine_and_says_so():
    x, y = _clusters(shots=1, k=4)
    chosen = select_head(x, y, 4)
    assert chosen.head.kind == COSINE and chosen.accuracy is None
    assert chosen.record["method"] == "one shot per class" and "one shot per class" in chosen.record["why"]
    assert set(chosen.record["accuracy"].values()) == {None}
    # calibrated on the distances between prototypes: the largest nearest-other-prototype distance
    d = 1.0 - chosen.head.arrays["prototypes"].astype(np.float64) @ chosen.head.arrays["prototypes"].T
    np.fill_diagonal(d, np.inf)
    assert chosen.threshold["threshold"] == pytest.approx(d.min(1).max(), rel=1e-5)
    assert "nearest other class" in chosen.threshold["calibration"]


def test_a_requested_head_is_kept_and_said_so():
    x, y = _clusters()
    chosen = select_head(x, y, 3, heads=(LOGISTIC,))
    assert chosen.head.kind == LOGISTIC and "as requested" in chosen.record["why"]
    assert list(chosen.record["accuracy"]) == [LOGISTIC] and chosen.accuracy == chosen.record["accuracy"][LOGISTIC]
    one = select_head(x[::5], y[::5], 3, heads=(PROTOTYPE,))
    assert one.head.kind == PROTOTYPE and one.accuracy is None and "as requested" in one.record["why"]


def test_augmented_copies_are_left_out_together():
    emb = np.array([[0.0], [1.0], [10.0], [11.0]])
    y = np.array([0, 1, 0, 1])  # swapped: each image is nearer the other class's remaining image
    copies = np.repeat(emb, 8, axis=0) + np.tile(np.linspace(0, 0.01, 8), 4)[:, None]
    groups = np.repeat(np.arange(4), 8)
    accuracy, own, _ = cross_validate(PROTOTYPE, copies, np.repeat(y, 8), groups, 2)
    assert accuracy == 0.0 and len(own) == 32  # as without copies: an image's twins never stay behind
    leaky, _, _ = cross_validate(PROTOTYPE, copies, np.repeat(y, 8), np.arange(32), 2)
    assert leaky > accuracy


@pytest.mark.parametrize("kind", HEADS)
def test_out_of_support_flags_a_far_query_and_no_support_image(kind):
    x, y = _clusters(seed=8, d=12, spread=0.05)
    shots_ok = select_head(x, y, 3, heads=(kind,))
    protos = np.stack([x[y == k].mean(0) for k in range(3)])
    # a query orthogonal to every class (and to the support mean), and far away
    basis = np.linalg.qr(np.vstack([protos, x.mean(0)]).T)[0]
    far = np.random.default_rng(0).normal(size=12)
    far = 50.0 * _unit(far - basis @ (basis.T @ far))
    flags, nearest = out_of_support(shots_ok.head, shots_ok.threshold["threshold"], np.vstack([x, far]))
    assert not flags[:-1].any() and flags[-1], (nearest, shots_ok.threshold)
    # one shot per class: calibrated on prototype distances, the support images themselves still pass
    one = select_head(x[::5], y[::5], 3)
    flags, _ = out_of_support(one.head, one.threshold["threshold"], np.vstack([x[::5], far]))
    assert flags.tolist() == [False, False, False, True]


def test_head_refuses_inconsistent_arrays():
    good = fit_head(LOGISTIC, *_clusters(), 3)
    with pytest.raises(ValueError, match="arrays"):
        Head(LOGISTIC, {"prototypes": good.arrays["prototypes"]}, good.params)
    with pytest.raises(ValueError, match="weights"):
        Head(LOGISTIC, {**good.arrays, "weights": good.arrays["weights"][:2]}, good.params)
    with pytest.raises(ValueError, match="not one of"):
        Head("knn", {"prototypes": good.arrays["prototypes"]}, {})
    with pytest.raises(ValueError, match="finite"):
        Head(COSINE, {"prototypes": np.full((2, 3), np.nan, dtype=np.float32)}, {"scale": 10.0})


# --- Grad-CAM of a head, from the feature map


def _numeric_channel_weights(score_of_features, features, h=1e-6):
    """Finite-difference d score / d features, averaged over positions: Grad-CAM's channel weights."""
    grad = np.zeros_like(features)
    for idx in np.ndindex(features.shape):
        step = np.zeros_like(features)
        step[idx] = h
        grad[idx] = (score_of_features(features + step) - score_of_features(features - step)) / (2 * h)
    return grad.mean(axis=(1, 2))


def _reference_cam(weights, features, size):
    cam = np.maximum(np.einsum("c,chw->hw", weights, features), 0)
    cam = upsample_bilinear(cam, size)
    return (cam - cam.min()) / (cam.max() - cam.min())


@pytest.mark.parametrize("kind", HEADS)
def test_gradcam_of_a_mean_pooled_embedding_matches_finite_differences(kind):
    rng = np.random.default_rng(10)
    c, hh, ww = 5, 3, 4
    support = rng.normal(size=(9, c))
    y = np.repeat([0, 1, 2], 3)
    head = fit_head(kind, support, y, 3)
    features = rng.normal(size=(c, hh, ww)) + 0.5
    embedding = features.mean(axis=(1, 2))
    target = 1
    blocks = embedding_blocks(embedding, features)
    assert blocks == [(0, c, "mean")]
    grad_mean = feature_gradient(head.logit_gradient(embedding[None], np.array([target]))[0], features, blocks)
    numeric = _numeric_channel_weights(lambda f: head.logits(f.mean(axis=(1, 2))[None])[0, target], features)
    np.testing.assert_allclose(grad_mean / (hh * ww), numeric, rtol=1e-4, atol=1e-7)
    cam = gradcam(features, grad_mean, (12, 16))
    assert cam.shape == (12, 16) and cam.dtype == np.float32 and cam.min() == 0.0 and cam.max() == 1.0
    np.testing.assert_allclose(cam, _reference_cam(numeric, features, (12, 16)), atol=1e-5)


def test_gradcam_uses_only_the_last_stage_of_a_multi_stage_embedding():
    # embedding = [l2(mean(stage 3)), l2(mean(last map))]: only the last block depends on `features`
    rng = np.random.default_rng(11)
    earlier = rng.normal(size=(3, 5, 5)).mean(axis=(1, 2))
    features = rng.normal(size=(4, 2, 2)) + 0.3

    def embed(f):
        return np.concatenate([_unit(earlier), _unit(f.mean(axis=(1, 2)))])

    support = rng.normal(size=(6, 7))
    head = fit_head(COSINE, support, np.repeat([0, 1], 3), 2)
    embedding = embed(features)
    blocks = embedding_blocks(embedding, features)
    assert blocks == [(3, 7, "l2_mean")]
    grad_mean = feature_gradient(head.logit_gradient(embedding[None], np.array([0]))[0], features, blocks)
    numeric = _numeric_channel_weights(lambda f: head.logits(embed(f)[None])[0, 0], features)
    np.testing.assert_allclose(grad_mean / 4, numeric, rtol=1e-4, atol=1e-7)
    # an embedding that is neither the mean nor its normalised block is not explained
    assert embedding_blocks(embedding * 2.0 + 1.0, features) == []


def test_gradcam_through_weighted_and_plain_blocks_of_the_same_map_matches_finite_differences():
    # embedding = [l2(weighted mean of the last map), l2(mean of an earlier stage), l2(mean of the last map)]: a taught
    # pooling attention's half and the plain half, both read by the head, both depending on `features`
    rng = np.random.default_rng(12)
    earlier = rng.normal(size=3)
    features = rng.normal(size=(4, 3, 2)) + 0.3
    weights = rng.uniform(0.01, 1.0, size=(3, 2))

    def embed(f):
        weighted = np.tensordot(f, weights, axes=([1, 2], [0, 1])) / weights.sum()
        return np.concatenate([_unit(weighted), _unit(earlier), _unit(f.mean(axis=(1, 2)))])

    support = rng.normal(size=(6, 11))
    head = fit_head(COSINE, support, np.repeat([0, 1], 3), 2)
    embedding = embed(features)
    blocks = embedding_blocks(embedding, features, weights)
    assert blocks == [(0, 4, "l2_weighted_mean"), (7, 11, "l2_mean")]
    assert embedding_blocks(embedding, features) == [(7, 11, "l2_mean")]  # without the weights, one block
    grad_mean = feature_gradient(head.logit_gradient(embedding[None], np.array([1]))[0], features, blocks, weights)
    numeric = _numeric_channel_weights(lambda f: head.logits(embed(f)[None])[0, 1], features)
    np.testing.assert_allclose(grad_mean / 6, numeric, rtol=1e-4, atol=1e-7)


def test_bilinear_upsampling_uses_half_pixel_centres():
    x = np.array([[0.0, 1.0], [2.0, 3.0]])
    up = upsample_bilinear(x, (4, 4))
    # source coordinates of the 4 output pixels per axis: -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped)
    cols = np.array([0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up, 2.0 * cols[:, None] + cols[None, :])
    assert gradcam(np.ones((2, 3, 3)), np.array([1.0, -0.5]), (6, 6)).max() == 0.0  # a flat map is all zeros
