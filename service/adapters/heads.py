"""Adapter heads: how an adapter turns an embedding into class scores, fitted on a support set.

- `prototype`: the mean embedding of each class under the bundle's training metric, as in ProtoNet.
  Paper: Snell, Swersky, Zemel, `Prototypical Networks for Few-shot Learning` - https://arxiv.org/abs/1703.05175
- `cosine`: L2-normalised embeddings, the normalised mean of each class, scores = scale * cosine.
- `centred`: the same after subtracting the support mean (SimpleShot's "CL2N").
  Paper: Wang et al., `SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning`
  - https://arxiv.org/abs/1911.04623
- `logistic`: multinomial logistic regression with an L2 penalty on the L2-normalised embeddings,
  the head of Tian et al., `Rethinking Few-Shot Image Classification` - https://arxiv.org/abs/2003.11539.
  Fitted here in numpy (Newton's method in the support rows' span, or Nesterov's accelerated gradient
  for large support sets, on the same objective as scikit-learn's `LogisticRegression(C=...)`),
  because scikit-learn and SciPy would add about 200 MB to the serving image.

`select_head` fits every head, scores each by leave-one-out accuracy on the support set (a whole
image with its augmented copies is left out at once; beyond `MAX_LOO_GROUPS` images, 10-fold
cross-validation), and keeps the best, the simpler head on a tie. With one shot per class nothing
can be left out, so it takes cosine prototypes and says so. `out_of_support_threshold` calibrates
the "none of these" distance on the same held-out images. The held-out mean heads are never built:
their scores on support rows come from the support set's Gram matrix (`held_out_scores`).

Pure numpy, no I/O: a head is its name, a few float32 arrays and JSON parameters, which the record
(`model.py`) persists as they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PROTOTYPE = "prototype"
COSINE = "cosine"
CENTRED = "centred"
LOGISTIC = "logistic"
HEADS = (COSINE, PROTOTYPE, CENTRED, LOGISTIC)  # also the order that breaks ties: simpler first

COSINE_SCALE = 10.0  # logits of the cosine heads = scale * cosine similarity (a fixed softmax temperature 0.1)
LOGISTIC_C = 10.0  # inverse L2 strength, scikit-learn's C
NEWTON_MAX_PARAMS = 1536  # K * (rank + 1) up to which logistic heads are fitted by Newton (an 18 MB Hessian)
MAX_LOO_GROUPS = 60  # up to this many held-out images, leave-one-out; beyond, CV_FOLDS-fold cross-validation
CV_FOLDS = 10


# --- the prototype maths the service has always used


def distances(embeddings: np.ndarray, prototypes: np.ndarray, metric: str) -> np.ndarray:
    """(N, D) x (K, D) -> (N, K) distances under the bundle's training metric."""
    e = embeddings.astype(np.float64)
    p = prototypes.astype(np.float64)
    if metric == "cosine":
        return 1.0 - l2_normalise(e) @ l2_normalise(p).T
    sq = (e**2).sum(1)[:, None] - 2.0 * e @ p.T + (p**2).sum(1)[None, :]
    sq = np.maximum(sq, 0.0)
    return np.sqrt(sq) if metric == "euclidean" else sq


def softmax_neg(d: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities from a softmax over negative distances, as the prototype loss defines them."""
    return softmax(-d / temperature)


def softmax(z: np.ndarray) -> np.ndarray:
    """Over the last axis (classes)."""
    z = z - z.max(axis=-1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(axis=-1, keepdims=True)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototypes(embeddings: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Classes in first-seen order, and the mean embedding of each."""
    classes = list(dict.fromkeys(labels))
    idx = np.asarray([classes.index(label) for label in labels])
    protos = np.stack([embeddings[idx == k].mean(axis=0) for k in range(len(classes))])
    return classes, protos.astype(np.float32)


def leave_one_out_accuracy(embeddings: np.ndarray, labels: list[str], metric: str) -> float | None:
    """Each support image classified by prototypes built without it; None when no class has 2 shots.

    An image whose class has a single shot is skipped: without it, its class has no prototype.
    """
    classes, protos = prototypes(embeddings, labels)
    counts = {c: labels.count(c) for c in classes}
    sums = {c: embeddings[[i for i, lab in enumerate(labels) if lab == c]].astype(np.float64).sum(0) for c in classes}
    correct = total = 0
    for i, label in enumerate(labels):
        if counts[label] < 2:
            continue
        own = (sums[label] - embeddings[i]) / (counts[label] - 1)
        p = protos.astype(np.float64).copy()
        p[classes.index(label)] = own
        predicted = int(np.argmin(distances(embeddings[i : i + 1], p, metric)[0]))
        correct += predicted == classes.index(label)
        total += 1
    return correct / total if total else None


# --- heads


@dataclass
class Head:
    """A fitted head: `kind`, float32 `arrays` and JSON `params` are all it is and all that is persisted.

    Arrays by kind: prototype `prototypes` (class means); cosine `prototypes` (unit class directions);
    centred `mean` (the support mean) and `prototypes` (unit directions after centring); logistic
    `weights` (K, D), `bias` (K,) and `prototypes` (the cosine ones, for the out-of-support distance).
    """

    kind: str
    arrays: dict[str, np.ndarray] = field(repr=False)
    params: dict[str, float | str]

    def __post_init__(self) -> None:
        if self.kind not in HEADS:
            raise ValueError(f"head {self.kind!r} is not one of {HEADS}")
        need = {PROTOTYPE: {"prototypes"}, COSINE: {"prototypes"}, CENTRED: {"mean", "prototypes"},
                LOGISTIC: {"weights", "bias", "prototypes"}}[self.kind]
        if set(self.arrays) != need:
            raise ValueError(f"a {self.kind} head has arrays {sorted(need)}, not {sorted(self.arrays)}")
        k, d = self.arrays["prototypes"].shape
        if self.kind == CENTRED and self.arrays["mean"].shape != (d,):
            raise ValueError(f"centred head: mean of shape {self.arrays['mean'].shape}, prototypes {(k, d)}")
        if self.kind == LOGISTIC and (self.arrays["weights"].shape != (k, d) or self.arrays["bias"].shape != (k,)):
            raise ValueError(f"logistic head: weights {self.arrays['weights'].shape}, bias "
                             f"{self.arrays['bias'].shape}, for {k} classes of dimension {d}")
        if not all(np.isfinite(a).all() for a in self.arrays.values()):
            raise ValueError(f"{self.kind} head arrays are not all finite")

    @property
    def n_classes(self) -> int:
        return int(self.arrays["prototypes"].shape[0])

    @property
    def dim(self) -> int:
        return int(self.arrays["prototypes"].shape[1])

    # the space each head measures distance in: (embeddings -> points, class points, metric)

    def _points(self, embeddings: np.ndarray) -> np.ndarray:
        e = np.asarray(embeddings, dtype=np.float64)
        if self.kind == PROTOTYPE:
            return e
        if self.kind == CENTRED:
            e = e - self.arrays["mean"].astype(np.float64)
        return l2_normalise(e)

    @property
    def metric(self) -> str:
        return str(self.params["distance"]) if self.kind == PROTOTYPE else "cosine"

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, K) distances to each class in the head's own geometry (cosine for logistic)."""
        return distances(self._points(embeddings), self.arrays["prototypes"], self.metric)

    def prototype_distances(self) -> np.ndarray:
        """(K, K) distances between the class points in the head's geometry."""
        p = self.arrays["prototypes"]
        return distances(p, p, self.metric)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, K) class scores before the softmax."""
        if self.kind == PROTOTYPE:
            return -self.distances(embeddings) / float(self.params["temperature"])
        z = self._points(embeddings)
        if self.kind == LOGISTIC:
            return z @ self.arrays["weights"].astype(np.float64).T + self.arrays["bias"].astype(np.float64)
        return float(self.params["scale"]) * (z @ self.arrays["prototypes"].astype(np.float64).T)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return softmax(self.logits(embeddings))

    def logit_gradient(self, embeddings: np.ndarray, target: np.ndarray) -> np.ndarray:
        """d logits[n, target[n]] / d embeddings[n], in closed form: (N, D)."""
        e = np.asarray(embeddings, dtype=np.float64)
        target = np.asarray(target, dtype=np.int64)
        if self.kind == PROTOTYPE:
            p = self.arrays["prototypes"].astype(np.float64)[target]
            t = float(self.params["temperature"])
            diff = e - p
            metric = self.params["distance"]
            if metric == "squared_euclidean":
                return -2.0 * diff / t
            if metric == "euclidean":
                return -diff / np.maximum(np.linalg.norm(diff, axis=1, keepdims=True), 1e-12) / t
            # cosine distance: logit = (cos(e, p) - 1) / t
            return _cosine_gradient(e, l2_normalise(p)) / t
        u = e - self.arrays["mean"].astype(np.float64) if self.kind == CENTRED else e
        w = (self.arrays["weights"] if self.kind == LOGISTIC else self.arrays["prototypes"]).astype(np.float64)
        scale = 1.0 if self.kind == LOGISTIC else float(self.params["scale"])
        return scale * _cosine_gradient(u, w[target])


def _cosine_gradient(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d (w . u / |u|) / d u = (w - (w . u_hat) u_hat) / |u|, row by row."""
    norm = np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    u_hat = u / norm
    return (w - (w * u_hat).sum(1, keepdims=True) * u_hat) / norm


def _class_means(x: np.ndarray, y: np.ndarray, n_classes: int, keep: np.ndarray) -> np.ndarray:
    """(F, K, D): for each of F problems, the class means of the rows of x its row of `keep` (F, N) keeps;
    x (N, D) shared, or (F, N, D) one per problem; one batched product."""
    onehot = np.eye(n_classes)[np.asarray(y, dtype=np.int64)]  # (N, K)
    members = (np.asarray(keep, dtype=np.float64)[:, :, None] * onehot).transpose(0, 2, 1)  # (F, K, N)
    return (members @ x) / members.sum(axis=2, keepdims=True)


def fit_head(kind: str, embeddings: np.ndarray, y: np.ndarray, n_classes: int, *, distance: str = "squared_euclidean",
             temperature: float = 1.0) -> Head:
    """Fit one head on (N, D) embeddings with integer labels y in [0, n_classes)."""
    if kind not in HEADS:
        raise ValueError(f"head {kind!r} is not one of {HEADS}")
    keep = np.ones((1, len(y)), dtype=bool)
    if kind == LOGISTIC:
        return held_out_logistic_heads(embeddings, y, n_classes, keep)[0]
    return held_out_mean_heads(kind, embeddings, y, n_classes, keep, distance=distance, temperature=temperature)[0]


def held_out_mean_heads(kind: str, embeddings: np.ndarray, y: np.ndarray, n_classes: int, keep: np.ndarray, *,
                        distance: str = "squared_euclidean", temperature: float = 1.0) -> list[Head]:
    """One prototype, cosine or centred head per row of `keep` (F, N), each fitted on the images that row
    keeps, all at once (leave-one-out fits the support set N times)."""
    e = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    if kind == PROTOTYPE:
        return [Head(kind, {"prototypes": _f32(p)}, {"distance": distance, "temperature": float(temperature)})
                for p in _class_means(e, y, n_classes, keep)]
    if kind == COSINE:
        protos = l2_normalise(_class_means(l2_normalise(e), y, n_classes, keep))
        return [Head(kind, {"prototypes": _f32(p)}, {"scale": COSINE_SCALE}) for p in protos]
    if kind == CENTRED:
        means = (keep @ e) / keep.sum(axis=1, keepdims=True)  # (F, D): each problem's own support mean
        protos = l2_normalise(_class_means(l2_normalise(e[None] - means[:, None]), y, n_classes, keep))
        return [Head(kind, {"mean": _f32(m), "prototypes": _f32(p)}, {"scale": COSINE_SCALE})
                for m, p in zip(means, protos, strict=True)]
    raise ValueError(f"{kind!r} is not a mean head ({PROTOTYPE}, {COSINE}, {CENTRED})")


def held_out_logistic_heads(embeddings: np.ndarray, y: np.ndarray, n_classes: int, keep: np.ndarray,
                            warm: Head | None = None) -> list[Head]:
    """One logistic head per row of `keep` (F, N), each fitted on the images that row keeps, all at once.

    `warm`: the head fitted on the whole support set, to start from; a warm-started fit is a held-out
    one, whose predictions need far less precision than the final head."""
    z = l2_normalise(np.asarray(embeddings, dtype=np.float64))
    init = None if warm is None else (warm.arrays["weights"].astype(np.float64), warm.arrays["bias"].astype(np.float64))
    weights, bias = fit_logistic(z, y, n_classes, c=LOGISTIC_C, keep=keep, init=init,
                                 tol=1e-6 if warm is None else 1e-3)
    return [Head(LOGISTIC, {"weights": _f32(w), "bias": _f32(b),
                            "prototypes": _f32(p)},
                 {"C": LOGISTIC_C, "features": "l2-normalised embedding"})
            for w, b, p in zip(weights, bias, l2_normalise(_class_means(z, y, n_classes, keep)), strict=True)]


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, *, c: float, keep: np.ndarray | None = None,
                 tol: float = 1e-6, max_iter: int = 5000, init: tuple[np.ndarray, np.ndarray] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: argmin 0.5 |W|^2 + c * sum_i CE(softmax(W x_i + b), y_i).

    scikit-learn's `LogisticRegression(C=c)` objective (the intercept is not penalised), solved until the
    gradient (its Frobenius norm on W, its largest entry on b) is below `tol`. `init` (weights, bias)
    warm-starts it, e.g. from the fit on the whole support set when leaving images out. Returns weights
    (K, D) and bias (K,), the bias centred (the softmax does not see a constant shift of it).

    `keep` (F, N) bool: F problems at once, each on the rows it keeps (leave-one-out fits the support
    set N times); weights (F, K, D) and bias (F, K) then. A support set has far fewer images than
    dimensions and the optimum lies in the span of its rows, so the problems are solved in that span
    (rank r <= N): by Newton's method while K (r + 1) parameters are few (`NEWTON_MAX_PARAMS`, the usual
    support set), else by accelerated gradient descent.
    """
    x = np.asarray(x, dtype=np.float64)
    gram = x @ x.T
    evals, evecs = np.linalg.eigh(gram)
    rank = evals > max(evals[-1], 0.0) * 1e-10
    if n_classes * (int(rank.sum()) + 1) <= NEWTON_MAX_PARAMS:
        return _logistic_newton(x, evecs[:, rank], evals[rank], y, n_classes, c=c, keep=keep, tol=tol,
                                max_iter=min(max_iter, 200), init=init)
    return _logistic_accelerated(x, gram, y, n_classes, c=c, keep=keep, tol=tol, max_iter=max_iter, init=init)


def _logistic_newton(x: np.ndarray, evecs: np.ndarray, evals: np.ndarray, y: np.ndarray, n_classes: int, *,
                     c: float, keep: np.ndarray | None, tol: float, max_iter: int,
                     init: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """`fit_logistic` in the rows' span: x_i = u_i Q with Q (r, D) orthonormal rows, W = B Q, |W| = |B|.

    One problem: Newton steps, the Hessian recomputed each time. F held-out problems: every step uses the
    Hessian of the whole support set at the starting point, factored once (they differ from it by the rows
    they leave out); a fixed positive-definite metric is still a descent direction. Each problem backtracks
    its own step (Armijo), so both converge from anywhere."""
    n, k = len(x), n_classes
    single = keep is None
    mask = c * (np.ones((1, n)) if single else np.asarray(keep, dtype=np.float64))  # (F, N)
    basis = (evecs / np.sqrt(evals)).T @ x  # (r, D)
    features = np.concatenate([evecs * np.sqrt(evals), np.ones((n, 1))], axis=1)  # (N, r + 1): u_i and the bias
    width = features.shape[1]
    penalty = np.ones(width)
    penalty[-1] = 0.0  # the intercept is not penalised
    target = np.eye(k)[np.asarray(y, dtype=np.int64)].T  # (K, N)
    theta = np.zeros((len(mask), k, width))  # (F, K, r + 1): [B | b]
    if init is not None:
        theta[:, :, :-1] = np.asarray(init[0], dtype=np.float64) @ basis.T
        theta[:, :, -1] = np.asarray(init[1], dtype=np.float64)

    def evaluate(theta: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits = theta @ features.T  # (F, K, N)
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = 0.5 * (penalty * theta**2).sum(axis=(1, 2)) - (mask * (target * log_p).sum(axis=1)).sum(axis=1)
        p = np.exp(log_p)
        grad = penalty * theta + ((p - target) * mask[:, None, :]) @ features
        return loss, grad, p

    def hessian(p: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(F, K (r+1), K (r+1)): sum_i mask_i (diag(p_i) - p_i p_i^T) (x) f_i f_i^T, plus the penalty."""
        pt = p.transpose(0, 2, 1)  # (F, N, K)
        curv = mask[:, :, None, None] * (pt[:, :, :, None] * np.eye(k) - pt[:, :, :, None] * pt[:, :, None, :])
        outer = (features[:, :, None] * features[:, None, :]).reshape(n, width * width)
        h = (curv.reshape(len(p), n, k * k).transpose(0, 2, 1) @ outer).reshape(len(p), k, k, width, width)
        h = h.transpose(0, 1, 3, 2, 4).reshape(len(p), k * width, k * width)
        # a shift of every class's intercept is invisible to the softmax: a tiny ridge keeps h invertible
        diagonal = np.arange(k * width)
        h[:, diagonal, diagonal] += np.tile(np.where(penalty > 0, penalty, 1e-9 * (1.0 + mask.max())), k)
        return h

    loss, grad, p = evaluate(theta, mask)
    shared = None  # F held-out problems: the inverse of the whole support set's Hessian at the start, once
    if len(mask) > 1:
        whole = np.full((1, n), c)
        shared = np.linalg.inv(hessian(evaluate(theta[:1], whole)[2], whole)[0])
    for _ in range(max_iter):
        size = np.maximum(np.sqrt((grad[:, :, :-1] ** 2).sum(axis=(1, 2))), np.abs(grad[:, :, -1]).max(axis=1))
        active = size >= tol
        if not active.any():
            break
        flat = grad.reshape(len(grad), -1)
        if shared is None:
            step = np.linalg.solve(hessian(p, mask)[0], flat[0])[None]
        else:
            step = flat @ shared  # symmetric: one product per step instead of two solves
        step = step.reshape(grad.shape) * active[:, None, None]
        slope = (grad * step).sum(axis=(1, 2))
        t = np.ones(len(theta))
        for _ in range(40):  # backtracking, each problem its own step size
            trial = theta - t[:, None, None] * step
            new_loss, new_grad, new_p = evaluate(trial, mask)
            ok = new_loss <= loss - 1e-4 * t * slope
            if ok.all():
                break
            t = np.where(ok, t, 0.5 * t)
        theta, loss, grad, p = trial, new_loss, new_grad, new_p
    weights, bias = theta[:, :, :-1] @ basis, theta[:, :, -1]
    bias = bias - bias.mean(axis=1, keepdims=True)
    return (weights[0], bias[0]) if single else (weights, bias)


def _logistic_accelerated(x: np.ndarray, gram: np.ndarray, y: np.ndarray, n_classes: int, *, c: float,
                          keep: np.ndarray | None, tol: float, max_iter: int,
                          init: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """`fit_logistic` by Nesterov's accelerated gradient on the mean loss, step 1/L with L the curvature
    bound 0.5 * lambda_max(X^T X) / n + 1/(c n), for support sets too large for Newton's Hessian.

    Every step moves W by a combination of the rows of X and a shrinking of where it started, so the
    iterates are kept as W = s * W0 + A X (A: K x N): the same iterates as on W, at N / D of the cost
    per step, and all F problems share each numpy call.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    single = keep is None
    mask = (np.ones((1, n)) if single else np.asarray(keep, dtype=np.float64))[:, :, None]  # (F, N, 1)
    rows = mask.sum(axis=1)[:, :, None]  # (F, 1, 1) images each problem fits
    onehot = np.eye(n_classes)[np.asarray(y, dtype=np.int64)]
    lam = 1.0 / (c * rows)
    # lambda_max of [X 1]^T [X 1] is that of the N x N matrix X X^T + 1 (an SVD of the N x D matrix costs
    # seconds when BLAS threads contend with ONNX Runtime's); a subset's is no larger
    curvature = 0.5 * np.linalg.eigvalsh(gram + 1.0)[-1] / rows + lam
    q = np.sqrt(lam / curvature)
    momentum = (1.0 - q) / (1.0 + q)
    w0 = np.zeros((n_classes, d)) if init is None else np.asarray(init[0], dtype=np.float64)
    start_logits = x @ w0.T  # (N, K): X W0^T, fixed
    w0_sq = float((w0**2).sum())
    b0 = np.zeros(n_classes) if init is None else np.asarray(init[1], dtype=np.float64)
    # state: s (F, 1, 1), A (F, K, N), b (F, 1, K)
    theta = (np.ones_like(rows), np.zeros((len(mask), n_classes, n)), np.broadcast_to(b0, (len(mask), 1, n_classes)))

    def residual(state: tuple) -> np.ndarray:  # d(mean loss)/d(logits), (F, N, K)
        s, a, b = state
        return (softmax(s * start_logits + (a @ gram).transpose(0, 2, 1) + b) - onehot) * mask / rows

    def step(state: tuple) -> tuple:  # one gradient step of size 1/L
        s, a, b = state
        r = residual(state)
        return (s * (1.0 - lam / curvature), a - (r.transpose(0, 2, 1) + lam * a) / curvature,
                b - r.sum(axis=1, keepdims=True) / curvature)

    def weights(state: tuple) -> np.ndarray:  # (F, K, D)
        s, a, _ = state
        return s * w0 + a @ x

    look = theta
    for i in range(max_iter):
        new = step(look)
        look = tuple(nw + momentum * (nw - old) for nw, old in zip(new, theta, strict=True))
        theta = new
        if i % 10 == 9:
            # the gradient on W is M X + lam s W0 with M = R^T + lam A; its Frobenius norm (at least its largest
            # entry) from N x N products: |M X|^2 = tr(M G M^T), <M X, W0> = <M, (X W0^T)^T>
            s, a, _ = theta
            r = residual(theta)
            m = r.transpose(0, 2, 1) + lam * a
            c_w0 = lam * s[:, 0, 0]
            grad_w = np.sqrt(np.maximum(((m @ gram) * m).sum(axis=(1, 2)) + 2.0 * c_w0 * (m * start_logits.T).sum(axis=(1, 2))
                                        + c_w0**2 * w0_sq, 0.0))
            if (np.maximum(grad_w, np.abs(r.sum(axis=1)).max(axis=1)) < tol * lam[:, 0, 0]).all():
                break
    w, bias = weights(theta), theta[2][:, 0, :]
    bias = bias - bias.mean(axis=1, keepdims=True)
    return (w[0], bias[0]) if single else (w, bias)


# --- choosing a head on the support set


def _folds(y: np.ndarray, groups: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Held-out sets of group ids: one group at a time, or CV_FOLDS folds beyond MAX_LOO_GROUPS.

    Only groups of classes with at least 2 groups are held out (a class must keep a prototype).
    """
    group_class = {int(g): int(y[groups == g][0]) for g in np.unique(groups)}
    per_class: dict[int, list[int]] = {}
    for g, k in sorted(group_class.items()):
        per_class.setdefault(k, []).append(g)
    eligible = [(k, rank, g) for k, gs in per_class.items() if len(gs) >= 2 for rank, g in enumerate(gs)]
    if len(eligible) <= MAX_LOO_GROUPS:
        return [np.asarray([g]) for _, _, g in eligible], "leave-one-out"
    # rank within the class spreads each class over the folds, so no fold takes a whole class
    folds: list[list[int]] = [[] for _ in range(CV_FOLDS)]
    for k, rank, g in eligible:
        folds[(rank + k) % CV_FOLDS].append(g)
    return [np.asarray(f) for f in folds if f], f"{CV_FOLDS}-fold cross-validation"


def held_out_masks(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, str]:
    """(F, N) bool, the images each held-out fold leaves out (see `_folds`), and the method's name."""
    folds, method = _folds(y, groups)
    return np.asarray([np.isin(groups, held) for held in folds], dtype=bool).reshape(len(folds), len(y)), method


def cross_validate(kind: str, embeddings: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, *,
                   full: Head | None = None, held_out: tuple[np.ndarray, str] | None = None,
                   **params) -> tuple[float | None, np.ndarray, str]:
    """Accuracy of `kind` on held-out support images, the held-out images' distances to their own
    class (in the head's geometry, fitted without them), and the method's name.

    `full`: the head fitted on every image, to warm-start the held-out logistic fits. `held_out`:
    `held_out_masks(y, groups)` when the caller already has it (the same folds for every head)."""
    outs, method = held_out if held_out is not None else held_out_masks(y, groups)
    if not outs.any():
        return None, np.zeros(0), "one shot per class"
    fold, row = np.nonzero(outs)  # each held-out image, with the fold whose head was fitted without it
    logits, dists = held_out_scores(kind, embeddings, y, n_classes, ~outs, fold, row, full=full, **params)
    correct = int((np.argmax(logits, axis=1) == y[row]).sum())
    return correct / len(row), dists[np.arange(len(row)), y[row]], method


def held_out_scores(kind: str, embeddings: np.ndarray, y: np.ndarray, n_classes: int, keep: np.ndarray,
                    fold: np.ndarray, row: np.ndarray, *, full: Head | None = None,
                    distance: str = "squared_euclidean", temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """`Head.logits` and `Head.distances` (M, K) of embeddings[row[m]] under the head fitted on the rows
    keep[fold[m]] keeps, without building those heads: every mean head is a weighted mean of support rows, so
    its scores on a support row follow from the (N, N) Gram matrix, at N / D of the cost of the vectors.
    The logistic head's weights come from `fit_logistic`, warm-started from `full` (the whole set's fit)."""
    e = np.asarray(embeddings, dtype=np.float64)
    keep = np.asarray(keep, dtype=np.float64)
    members = keep[:, :, None] * np.eye(n_classes)[np.asarray(y, dtype=np.int64)]  # (F, N, K)
    means = members / members.sum(axis=1, keepdims=True)  # each fold's class means as weights on the rows
    gram = e @ e.T
    if kind == PROTOTYPE:
        cross = np.einsum("mi,mik->mk", gram[row], means[fold])  # x . p
        sq_norms = np.einsum("fik,ij,fjk->fk", means, gram, means)[fold]  # |p|^2
        if distance == "cosine":
            d = 1.0 - cross / np.maximum(np.sqrt(gram[row, row])[:, None] * np.sqrt(sq_norms), 1e-12)
        else:
            d = np.maximum(gram[row, row][:, None] - 2.0 * cross + sq_norms, 0.0)
            d = np.sqrt(d) if distance == "euclidean" else d
        return -d / temperature, d
    if kind == CENTRED:  # each fold's rows minus its own support mean w X, then L2-normalised
        w = keep / keep.sum(axis=1, keepdims=True)
        gw = w @ gram  # (F, N)
        points = gram[None] - gw[:, :, None] - gw[:, None, :] + (gw * w).sum(axis=1)[:, None, None]
    else:  # cosine and logistic: the L2-normalised rows
        points = np.broadcast_to(gram, (len(keep), *gram.shape))
    norms = np.sqrt(np.maximum(np.einsum("fii->fi", points), 0.0))
    unit = points / np.maximum(norms[:, :, None] * norms[:, None, :], 1e-24)  # (F, N, N) Gram of unit points
    cross = np.einsum("mi,mik->mk", unit[fold, row], means[fold])  # z . (class mean of z)
    proto_norms = np.sqrt(np.maximum(np.einsum("fik,fij,fjk->fk", means, unit, means), 0.0))[fold]
    cosine = cross / np.maximum(proto_norms, 1e-12)
    if kind != LOGISTIC:
        return COSINE_SCALE * cosine, 1.0 - cosine
    z = l2_normalise(e)
    full = full if full is not None else fit_head(LOGISTIC, e, y, n_classes)
    weights, bias = fit_logistic(z, y, n_classes, c=LOGISTIC_C, keep=keep.astype(bool), tol=1e-3,
                                 init=(full.arrays["weights"].astype(np.float64), full.arrays["bias"].astype(np.float64)))
    return np.einsum("md,mkd->mk", z[row], weights[fold]) + bias[fold], 1.0 - cosine


@dataclass
class Selection:
    head: Head
    accuracy: float | None  # of the chosen head on held-out support images; None with one shot per class
    record: dict  # JSON: method, per-head accuracy, chosen, why
    threshold: dict  # JSON: the out-of-support calibration


def select_head(embeddings: np.ndarray, y: np.ndarray, n_classes: int, *, groups: np.ndarray | None = None,
                heads: tuple[str, ...] = HEADS, distance: str = "squared_euclidean",
                temperature: float = 1.0) -> Selection:
    """Fit every head in `heads`, keep the one with the best held-out accuracy (ties: the earlier in
    `heads`), fit it on the whole support set, and calibrate its out-of-support threshold.

    `groups` gives the source image of each row (augmented copies share one); default: one per row.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    params = {"distance": distance, "temperature": temperature}
    fitted = {kind: fit_head(kind, e, y, n_classes, **params) for kind in heads}
    held_out = held_out_masks(y, groups)
    results = {kind: cross_validate(kind, e, y, groups, n_classes, full=fitted[kind], held_out=held_out, **params)
               for kind in heads}
    method = next(iter(results.values()))[2]
    if method == "one shot per class" and len(heads) == 1:
        chosen = heads[0]
        why = f"{chosen} as requested; one shot per class, so nothing to leave out and no accuracy to report"
        accuracy, own = None, np.zeros(0)
    elif method == "one shot per class":
        chosen = COSINE
        why = ("one shot per class: there is nothing to leave out, so cosine prototypes "
               "(the head that needs no fitting and no distance scale)")
        accuracy, own = None, np.zeros(0)
    elif len(heads) == 1:
        chosen = heads[0]
        accuracy, own = results[chosen][0], results[chosen][1]
        why = f"{chosen} as requested; its {method} accuracy is {accuracy:.3f}"
    else:
        scores = {kind: r[0] for kind, r in results.items()}
        best = max(scores.values())
        tied = [k for k in heads if scores[k] == best]
        chosen = tied[0]
        listed = ", ".join(f"{k} {scores[k]:.3f}" for k in heads)
        why = f"highest {method} accuracy ({listed})"
        if len(tied) > 1:
            why += f"; tied with {', '.join(tied[1:])}, the simpler head wins"
        accuracy, own = best, results[chosen][1]
    head = fitted[chosen] if chosen in fitted else fit_head(chosen, e, y, n_classes, **params)
    record = {"chosen": chosen, "method": method, "why": why,
              "evaluated": int(len(own)) if method != "one shot per class" else 0,
              "accuracy": {k: r[0] for k, r in results.items()}}
    return Selection(head, accuracy, record, out_of_support_threshold(head, own))


def out_of_support_threshold(head: Head, own_distances: np.ndarray) -> dict:
    """The distance beyond which a query is unlike every class of the adapter.

    With held-out support images: the largest distance of a held-out image to its own class
    (prototypes fitted without it), so no image like those of the support set is flagged. With
    one shot per class: the largest distance from a class to its nearest other class.
    """
    if len(own_distances):
        value = float(np.max(own_distances))
        how = f"largest held-out distance of {len(own_distances)} support images to their own class"
    else:
        d = head.prototype_distances()
        np.fill_diagonal(d, np.inf)
        value = float(np.max(d.min(axis=1)))
        how = "one shot per class: largest distance from a class to its nearest other class"
    return {"threshold": value, "distance": head.metric, "calibration": how}


def out_of_support(head: Head, threshold: float, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) flags (True: farther than `threshold` from every class) and (N,) nearest-class distances."""
    nearest = head.distances(embeddings).min(axis=1)
    return nearest > threshold, nearest


# --- Grad-CAM for an adapter, from model.onnx's outputs


def embedding_blocks(embedding: np.ndarray, features: np.ndarray, weights: np.ndarray | None = None, *,
                     atol: float = 1e-4) -> list[tuple[int, int, str]]:
    """Every block of `embedding` (D,) that pools `features` (C, h, w): [(start, stop, how)], in order.

    `how` is "mean" (the block is the spatial mean), "l2_mean" (its L2-normalised mean, as in a concatenation of
    normalised pooled stages) or, given pooling `weights` (h, w), "l2_weighted_mean" (the L2-normalised mean
    weighted by them, as a taught pooling attention makes it). [] when no block is any of them.
    """
    c, d = features.shape[0], embedding.shape[0]
    mean = features.astype(np.float64).mean(axis=(1, 2))
    pooled = {"mean": mean, "l2_mean": l2_normalise(mean)}
    if weights is not None:
        pooled["l2_weighted_mean"] = l2_normalise(_weighted_mean(features, weights))
    scale = max(float(np.abs(mean).max()), 1e-6)
    e = embedding.astype(np.float64)
    tol = {how: atol * (scale if how == "mean" else 1.0) for how in pooled}
    # offsets whose first value fits, then the whole block: a few comparisons instead of one per offset
    hits = sorted((int(start), how) for how, v in pooled.items()
                  for start in np.flatnonzero(np.isclose(e[: max(d - c + 1, 0)], v[0], rtol=1e-3, atol=tol[how]))
                  if np.allclose(e[start : start + c], v, rtol=1e-3, atol=tol[how]))
    found, end = [], 0
    for start, how in hits:  # in order, never overlapping
        if start >= end:
            found.append((start, start + c, how))
            end = start + c
    return found


def _weighted_mean(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = weights.astype(np.float64)
    return np.tensordot(features.astype(np.float64), w, axes=([1, 2], [0, 1])) / max(float(w.sum()), 1e-12)


def feature_gradient(grad_embedding: np.ndarray, features: np.ndarray, blocks: list[tuple[int, int, str]],
                     weights: np.ndarray | None = None) -> np.ndarray:
    """d score / d features (C, h, w) averaged over positions, times h*w (C,): the sum over `blocks` of d score /
    d pooled vector, from d score / d embedding (D,).

    Each position's gradient through a block is that vector times the position's share of the pooling (1 / (h*w)
    for a mean, w_ij / sum(w) weighted), so its average over positions is the vector / (h*w) either way."""
    total = np.zeros(features.shape[0], dtype=np.float64)
    for start, stop, how in blocks:
        g = grad_embedding[start:stop].astype(np.float64)
        if how != "mean":  # through the L2 normalisation of the pooled vector
            pooled = features.astype(np.float64).mean(axis=(1, 2)) if how == "l2_mean" else \
                _weighted_mean(features, weights)
            norm = max(float(np.linalg.norm(pooled)), 1e-12)
            unit = pooled / norm
            g = (g - (g @ unit) * unit) / norm
        total += g
    return total


def gradcam(features: np.ndarray, grad_mean: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM from one feature map (C, h, w) and d score / d mean(features) (C,) -> (H, W) in [0, 1].

    With embedding = mean over the h*w positions, d score / d features[c, i, j] = grad_mean[c] / (h*w)
    at every position, so the channel weights (that gradient averaged over positions) are
    grad_mean / (h*w). Map = ReLU(sum_c weight_c * features_c), bilinearly upsampled (half-pixel
    centres, as torch's align_corners=False), min-max normalised; all zeros where it is flat.
    """
    c, h, w = features.shape
    weights = grad_mean.astype(np.float64) / (h * w)
    cam = np.maximum(np.tensordot(weights, features.astype(np.float64), axes=1), 0.0)
    cam = upsample_bilinear(cam, size)
    lo, hi = float(cam.min()), float(cam.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros(size, dtype=np.float32)
    return ((cam - lo) / (hi - lo)).astype(np.float32)


def upsample_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W), bilinear with half-pixel centres and edge clamping (torch align_corners=False)."""
    h, w = x.shape
    out_h, out_w = size

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    top = x[y0][:, x0] * (1 - fx) + x[y0][:, x1] * fx
    bottom = x[y1][:, x0] * (1 - fx) + x[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]
