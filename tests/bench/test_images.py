import pytest

from bench.images import load_samples, support_sets


def test_samples_cover_every_ebhi_class(ebhi_dir):
    samples = load_samples(ebhi_dir.parent, per_class=5)
    by_class = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    assert sorted(by_class) == sorted(p.name for p in ebhi_dir.iterdir() if p.is_dir())
    assert all(len(v) == 5 for v in by_class.values())
    assert all(s.data[:8] == b"\x89PNG\r\n\x1a\n" for s in samples)


def test_samples_spread_over_specimens(ebhi_dir):
    from bundle.datasets import group_of

    samples = load_samples(ebhi_dir.parent, per_class=5)
    for label in {s.label for s in samples}:
        specimens = {group_of(p.name, "ebhi_seg") for p in (ebhi_dir / label).iterdir()}
        chosen = [group_of(s.path.name, "ebhi_seg") for s in samples if s.label == label]
        assert len(set(chosen)) == min(5, len(specimens)), (label, chosen)


def test_support_sets_are_5_way_5_shot_and_differ(ebhi_dir):
    samples = load_samples(ebhi_dir.parent, per_class=10)
    sets = support_sets(samples, ways=5, shots=5, count=2)
    for support in sets:
        assert len(support) == 25
        labels = [s.label for s in support]
        assert len(set(labels)) == 5 and all(labels.count(c) == 5 for c in set(labels))
    assert [s.path for s in sets[0]] != [s.path for s in sets[1]]


def test_support_sets_need_enough_classes(ebhi_dir):
    samples = [s for s in load_samples(ebhi_dir.parent, per_class=5) if s.label in ("normal", "polyp")]
    with pytest.raises(ValueError, match="5-way 5-shot"):
        support_sets(samples, ways=5, shots=5, count=1)


def test_missing_data_dir_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="HISTOSERVE_DATA_DIR"):
        load_samples(tmp_path, per_class=1)
