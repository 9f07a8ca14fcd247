"""bench.adapter_oos on the real data and the default embedding bundle, a few small episodes: it runs, reports
each head and the flag rates, and `--augment dihedral` builds its support sets from 8 views per image."""
from __future__ import annotations

import json

import pytest

from bench import adapter_oos
from service.settings import REPO_ROOT

EMBEDDING = REPO_ROOT / "model_store" / "fewshot_taught_attention_lite2" / "1"


@pytest.mark.parametrize("augment", ["none", "dihedral"])
def test_episodes_report_accuracy_heads_and_flags(ebhi_dir, breakhis_dir, capsys, augment):
    code = adapter_oos.main(["--model", str(EMBEDDING), "--data", str(ebhi_dir.parent), "--episodes", "3",
                             "--per-class", "8", "--shots", "2", "--augment", augment])
    assert code == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    result = json.loads(line)
    assert result["shots"] == 2 and result["episodes"] == 3 and sum(result["heads"].values()) == 3
    assert result.get("augment", "none") == augment
    assert 0.0 <= result["accuracy"] <= 1.0 and set(result["accuracy_by_head"]) == {
        "cosine", "prototype", "centred", "logistic"}
    assert set(result["flagged"]) == {"own", "ebhi_other", "breakhis", "glass", "blur"}
    assert all(0.0 <= rate <= 1.0 for rate in result["flagged"].values())
