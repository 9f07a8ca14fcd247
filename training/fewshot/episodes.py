"""Episodic sampling: N-way K-shot Q-query tasks over a labelled, grouped image set.

Episodes are what few-shot methods train and are evaluated on (Vinyals et al., *Matching Networks for One
Shot Learning*, NeurIPS 2016). Support and query never share an image, and, where a class has more than one
group (patient or specimen), they never share a group either: otherwise the query is a near-duplicate of the
support and accuracy is inflated. A class with a single group (BreakHis adenosis, phyllodes tumour, lobular
carcinoma) cannot be split that way; the sampler reports such classes in ``shared_group_classes`` so that
results can say so.

Episode ``i`` is drawn from a generator seeded by ``(seed, i)``, so the same seed gives the same episodes in
any order, and every method is evaluated on exactly the same tasks.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# How many random group orders to try before deciding a class cannot be split by group for this (K, Q).
_GROUP_SPLIT_TRIES = 20


@dataclass(frozen=True)
class Episode:
    """Indices into the sample list; labels are episode-local, 0..n_way-1, in the order of ``classes``."""

    classes: tuple[int, ...]      # dataset label of each episode class
    support: np.ndarray           # (n_way * k_shot,) sample indices, class-major
    support_labels: np.ndarray    # (n_way * k_shot,) episode labels
    query: np.ndarray             # (n_way * q_query,) sample indices, class-major
    query_labels: np.ndarray      # (n_way * q_query,) episode labels
    group_disjoint: tuple[bool, ...]  # per class: were support and query drawn from different groups


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes from the samples whose label is in ``classes``.

    ``labels[i]`` and ``groups[i]`` describe sample ``i``. ``classes`` is the pool episodes draw their
    ``n_way`` classes from (all of them when the pool has exactly ``n_way``).
    """

    def __init__(
        self,
        labels: Sequence[int],
        groups: Sequence[str],
        classes: Sequence[int],
        n_way: int,
        k_shot: int,
        q_query: int,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if len(labels) != len(groups):
            raise ValueError(f"labels ({len(labels)}) and groups ({len(groups)}) differ in length")
        if n_way < 2 or k_shot < 1 or q_query < 1:
            raise ValueError(f"need n_way >= 2, k_shot >= 1, q_query >= 1; got {n_way}, {k_shot}, {q_query}")
        classes = list(dict.fromkeys(int(c) for c in classes))
        if len(classes) < n_way:
            raise ValueError(f"{n_way}-way episodes need at least {n_way} classes; the pool has {len(classes)}")
        name = (lambda c: class_names[c]) if class_names is not None else str
        by_class: dict[int, dict[str, list[int]]] = {c: defaultdict(list) for c in classes}
        for i, (label, group) in enumerate(zip(labels, groups, strict=True)):
            if int(label) in by_class:
                by_class[int(label)][group].append(i)
        too_few = {name(c): sum(map(len, g.values())) for c, g in by_class.items()
                   if sum(map(len, g.values())) < k_shot + q_query}
        if too_few:
            raise ValueError(
                f"{k_shot}-shot {q_query}-query episodes need at least {k_shot + q_query} images per class; "
                f"too few in: " + ", ".join(f"{c!r} ({n})" for c, n in sorted(too_few.items()))
            )
        self.n_way, self.k_shot, self.q_query, self.seed = n_way, k_shot, q_query, seed
        self.classes = classes
        # Sorted groups and indices: the episodes depend on the seed only, not on the scan order.
        self._groups = {c: {g: sorted(ix) for g, ix in sorted(gs.items())} for c, gs in by_class.items()}
        self.shared_group_classes = sorted(
            name(c) for c in classes if not self._can_split(c, np.random.default_rng([seed, c]))
        )

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.seed, index])
        picked = rng.choice(len(self.classes), size=self.n_way, replace=False)
        classes = tuple(self.classes[i] for i in picked)
        support, query, disjoint = [], [], []
        for c in classes:
            s, q, ok = self._draw(c, rng)
            support.append(s)
            query.append(q)
            disjoint.append(ok)
        return Episode(
            classes=classes,
            support=np.concatenate(support),
            support_labels=np.repeat(np.arange(self.n_way), self.k_shot),
            query=np.concatenate(query),
            query_labels=np.repeat(np.arange(self.n_way), self.q_query),
            group_disjoint=tuple(disjoint),
        )

    def _group_split(self, c: int, rng: np.random.Generator) -> tuple[list[int], list[int]] | None:
        """Pools for support and query from disjoint groups, or None when no such split was found."""
        groups = list(self._groups[c].values())
        if len(groups) < 2:
            return None
        for _ in range(_GROUP_SPLIT_TRIES):
            order = rng.permutation(len(groups))
            support_pool: list[int] = []
            for n, g in enumerate(order):
                support_pool += groups[g]
                if len(support_pool) >= self.k_shot:
                    query_pool = [i for h in order[n + 1:] for i in groups[h]]
                    if len(query_pool) >= self.q_query:
                        return support_pool, query_pool
                    break
        return None

    def _can_split(self, c: int, rng: np.random.Generator) -> bool:
        return self._group_split(c, rng) is not None

    def _draw(self, c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        split = self._group_split(c, rng)
        if split is not None:
            support_pool, query_pool = split
            s = rng.choice(support_pool, size=self.k_shot, replace=False)
            q = rng.choice(query_pool, size=self.q_query, replace=False)
            return s, q, True
        # One group only (or none large enough): disjoint images, shared group; reported by the sampler.
        pool = [i for ix in self._groups[c].values() for i in ix]
        drawn = rng.choice(pool, size=self.k_shot + self.q_query, replace=False)
        return drawn[: self.k_shot], drawn[self.k_shot:], False
