"""`python -m training export-wsinfer`: TorchScript + a WSInfer model-zoo config, on a run trained here."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from training.cli import main

CLASSES = ["red", "green", "blue"]


def wsinfer_schema() -> dict:
    """The model-config schema the `wsinfer-zoo` package ships, read without importing the package
    (its import pulls in the Hugging Face client)."""
    spec = importlib.util.find_spec("wsinfer_zoo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("wsinfer-zoo is not installed (.ci/run installs it: pip install --no-deps wsinfer-zoo==0.6.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "schemas" / "model-config.schema.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def run_and_bundle(tmp_path_factory):
    """A run directory as `train` + `evaluate` leave it (checkpoint.pt, metrics.json), and its bundle."""
    torch = pytest.importorskip("torch")
    from models import create_model
    from training.export import export_bundle

    root = tmp_path_factory.mktemp("wsinfer_run")
    torch.manual_seed(0)
    model_args = {"num_classes": 3, "widths": [4, 8, 8]}
    net = create_model("resnet20", **model_args).eval()
    mean, std, temperature = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 1.7
    run = root / "run"
    run.mkdir()
    torch.save({"architecture": "resnet20", "model_args": model_args, "model": net.state_dict(),
                "classes": CLASSES, "preprocessing": {"size": 16, "mean": mean, "std": std}}, run / "checkpoint.pt")
    (run / "metrics.json").write_text(json.dumps({"temperature": temperature, "classes": CLASSES}))
    bundle = export_bundle(net, root / "store", "tiny_wsinfer", classes=CLASSES, input_size=(16, 16), mean=mean,
                           std=std, temperature=temperature, model_args=model_args)
    return run, bundle


def test_export_wsinfer_follows_the_schema_and_matches_the_bundle(run_and_bundle, tmp_path, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    torch = pytest.importorskip("torch")
    run, bundle = run_and_bundle
    out = tmp_path / "wsinfer"
    capsys.readouterr()
    assert main(["export-wsinfer", "--run", str(run), "--out", str(out), "--bundle", str(bundle),
                 "--spacing", "2.4"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["parity"]["probabilities_max_abs_diff"] <= 1e-4

    config = json.loads((out / "config.json").read_text())
    schema = wsinfer_schema()
    jsonschema.validate(config, schema)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert config["class_names"] == manifest["classes"] and config["num_classes"] == 3
    assert config["patch_size_pixels"] == 16 and config["spacing_um_px"] == 2.4
    normalize = next(t for t in config["transform"] if t["name"] == "Normalize")["arguments"]
    assert normalize["mean"] == pytest.approx(manifest["preprocessing"]["mean"])
    # a broken config fails the same schema (the check can fail)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "spec_version": "9.9"}, schema)

    # WSInfer applies the softmax to what the TorchScript model returns: the bundle's probabilities
    import onnxruntime as ort

    model = torch.jit.load(str(out / "torchscript_model.pt"))
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["probabilities"], {"image": x})
    with torch.no_grad():
        got = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_export_wsinfer_needs_a_spacing(run_and_bundle, tmp_path):
    run, bundle = run_and_bundle
    with pytest.raises(SystemExit, match="spacing of the network input is unknown"):
        main(["export-wsinfer", "--run", str(run), "--out", str(tmp_path / "w"), "--bundle", str(bundle)])
