import numpy as np
import pytest

from training.fewshot.episodes import EpisodeSampler


def _dataset():
    """3 classes: class 0 and 1 have several groups, class 2 a single group."""
    labels, groups = [], []
    for c, group_sizes in enumerate([[4, 3, 5, 2], [6, 6], [12]]):
        for g, n in enumerate(group_sizes):
            labels += [c] * n
            groups += [f"c{c}g{g}"] * n
    return labels, groups


def test_support_and_query_never_share_an_image_and_groups_are_kept_apart_where_possible():
    labels, groups = _dataset()
    sampler = EpisodeSampler(labels, groups, [0, 1, 2], n_way=3, k_shot=2, q_query=4, seed=1)
    assert sampler.shared_group_classes == ["2"]
    for i in range(200):
        ep = sampler.episode(i)
        assert not set(ep.support) & set(ep.query)
        assert len(set(ep.support)) == 6 and len(set(ep.query)) == 12
        for j, c in enumerate(ep.classes):
            s = ep.support[ep.support_labels == j]
            q = ep.query[ep.query_labels == j]
            assert all(labels[i] == c for i in [*s, *q])
            sg, qg = {groups[i] for i in s}, {groups[i] for i in q}
            if c == 2:
                assert not ep.group_disjoint[j]
            else:
                assert ep.group_disjoint[j] and not sg & qg


def test_episodes_are_deterministic_per_seed_and_index():
    labels, groups = _dataset()
    a = EpisodeSampler(labels, groups, [0, 1, 2], 2, 1, 3, seed=7)
    b = EpisodeSampler(labels, groups, [0, 1, 2], 2, 1, 3, seed=7)
    for i in (5, 0, 3):  # any order
        ea, eb = a.episode(i), b.episode(i)
        assert ea.classes == eb.classes
        np.testing.assert_array_equal(ea.support, eb.support)
        np.testing.assert_array_equal(ea.query, eb.query)
    c = EpisodeSampler(labels, groups, [0, 1, 2], 2, 1, 3, seed=8)
    assert any(not np.array_equal(a.episode(i).query, c.episode(i).query) for i in range(10))


def test_too_few_images_is_a_clear_error_naming_the_class():
    labels, groups = _dataset()
    names = ["ductal", "mucinous", "adenosis"]
    with pytest.raises(ValueError, match=r"at least 15 images per class.*'adenosis' \(12\)"):
        EpisodeSampler(labels, groups, [0, 1, 2], 3, 5, 10, class_names=names)


def test_too_few_classes_for_the_way_is_an_error():
    labels, groups = _dataset()
    with pytest.raises(ValueError, match="3-way episodes need at least 3 classes"):
        EpisodeSampler(labels, groups, [0, 1], 3, 1, 1)
