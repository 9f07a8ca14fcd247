"""Few-shot on real histopathology through HTTP: an adapter of 5 images per class from classes the
default embedding bundle never saw classifies other specimens of those classes clearly above chance.

Needs the trained default embedding bundle in model_store/ and the shared data; skips, saying
which is missing, otherwise.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import REPO_ROOT, Settings
from service.store import discover

pytestmark = pytest.mark.slow

SHOTS = 5
QUERIES = 15  # per class
MODEL_STORE = REPO_ROOT / "model_store"


def _group(dataset: str, path: Path) -> str:
    """Specimen (EBHI) or patient (BreakHis, numeric root) id, so support and queries never share one."""
    if dataset == "ebhi_seg":
        return path.name.split("-", 1)[0]
    return re.sub(r"\D+$", "", path.name.split("_")[1])


def _split(dataset: str, folder: Path) -> tuple[list[Path], list[Path]]:
    """5 support images from the first specimens, queries from the other specimens (sorted, deterministic)."""
    paths = sorted(folder.glob("*.png"))
    groups = sorted({_group(dataset, p) for p in paths})
    support, used = [], set()
    for g in groups:
        if len(support) >= SHOTS:
            break
        take = [p for p in paths if _group(dataset, p) == g][: SHOTS - len(support)]
        support += take
        used.add(g)
    queries = [p for p in paths if _group(dataset, p) not in used][:QUERIES]
    return support, queries


def test_adapter_on_unseen_classes_beats_chance(tmp_path):
    bundles, _ = discover(MODEL_STORE)
    embedding = [b for b in bundles if b.task == "embedding"]
    if not embedding:
        pytest.skip("no embedding bundle in model_store/ yet: the trained default few-shot bundle has not landed")
    # the default of /adapt (model_store/defaults.json), its latest version
    default = json.loads((MODEL_STORE / "defaults.json").read_text()).get("embedding")
    named = sorted((b for b in embedding if b.name == default), key=lambda b: b.version)
    bundle = named[-1] if named else embedding[0]
    from tests.conftest import DATA_DIR

    # The unseen classes: those of a dataset the bundle's manifest does not list.
    choice = None
    for dataset in ("ebhi_seg", "breakhis_200x"):
        root = DATA_DIR / dataset
        if not root.is_dir():
            continue
        unseen = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name not in bundle.classes]
        usable = [d for d in unseen if len(_split(dataset, d)[1]) >= 3]
        if len(usable) >= 2:
            choice = (dataset, usable)
            break
    if choice is None:
        pytest.skip(f"no shared dataset under {DATA_DIR} has 2 classes unseen by {bundle.ref} with enough specimens")
    dataset, folders = choice

    store = tmp_path / "store"
    shutil.copytree(bundle.path, store / bundle.name / str(bundle.version))
    settings = Settings(model_store=store, state_dir=tmp_path / "state", max_batch_size=4, max_files=64,
                        max_queue=64, max_upload_bytes=256 * 1024 * 1024)
    with TestClient(create_app(settings)) as c:
        files, labels, queries = [], [], []
        for d in folders:
            support, qs = _split(dataset, d)
            files += [("files", (p.name, p.read_bytes(), "image/png")) for p in support]
            labels += [d.name] * len(support)
            queries += [(p, d.name) for p in qs]
        r = c.post("/adapt", files=files, data={"labels": labels})
        assert r.status_code == 201, r.text
        adapter_id = r.json()["id"]
        correct = 0
        for start in range(0, len(queries), 16):
            chunk = queries[start : start + 16]
            r = c.post("/classify", data={"adapter": adapter_id},
                       files=[("files", (p.name, p.read_bytes(), "image/png")) for p, _ in chunk])
            assert r.status_code == 200, r.text
            correct += sum(res["label"] == truth for res, (_, truth) in zip(r.json()["results"], chunk, strict=True))
    accuracy, chance = correct / len(queries), 1 / len(folders)
    print(f"{bundle.ref} on unseen {dataset} classes {[d.name for d in folders]}: "
          f"{accuracy:.3f} over {len(queries)} queries (chance {chance:.3f})")
    assert accuracy >= chance + 0.15, f"accuracy {accuracy:.3f} is not clearly above chance {chance:.3f}"
