"""`python -m training export-wsinfer --run RUN --out DIR`: a run as a WSInfer model (TorchScript + config.json).

    python -m training export-wsinfer --run runs/ebhi_cbam_resnet18 --out wsinfer/ebhi \
        --bundle model_store/ebhi_cbam_resnet18/1 [--spacing UM_PER_INPUT_PIXEL]

A bundle holds ONNX only, so the TorchScript model is traced from the run's PyTorch checkpoint. It returns
calibrated logits (`logits / temperature`): WSInfer applies the softmax, which then gives the bundle's
probabilities. `config.json` follows the WSInfer model-zoo schema (spec 1.0, shipped in the `wsinfer-zoo`
package): patches of `patch_size_pixels` at `spacing_um_px`, resized to the network input and normalised
with the run's mean and std. So that QuPath's WSInfer extension and the wsinfer CLI can run the network.

The spacing is the physical size of one network-input pixel: `--spacing`, else the bundle's
`pixel_size_um` (WSInfer has one spacing for both axes: an anisotropic pixel is exported as the geometric
mean of its two sides, and the command says so). With `--bundle`, the TorchScript model is checked
against the bundle's model.onnx on random inputs: probabilities within 1e-4, or the export fails.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PARITY_TOLERANCE = 1e-4
TORCHSCRIPT_FILE = "torchscript_model.pt"


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-wsinfer", help="TorchScript + WSInfer config.json of a run (QuPath WSInfer, wsinfer CLI)")
    p.add_argument("--run", required=True, help="run directory (checkpoint.pt, metrics.json)")
    p.add_argument("--out", required=True, help="output directory for torchscript_model.pt and config.json")
    p.add_argument("--bundle", default=None, help="the run's ONNX bundle: parity check, and its pixel_size_um")
    p.add_argument("--spacing", type=float, default=None,
                   help="micrometres per network-input pixel (default: the bundle's pixel_size_um)")
    p.set_defaults(func=_export_wsinfer)


def wsinfer_config(*, architecture: str, classes: list[str], size: int, spacing: float, mean, std) -> dict:
    return {
        "spec_version": "1.0",
        "architecture": architecture,
        "num_classes": len(classes),
        "class_names": list(classes),
        "patch_size_pixels": int(size),
        "spacing_um_px": float(spacing),
        "transform": [
            {"name": "Resize", "arguments": {"size": int(size)}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}},
        ],
    }


def _spacing(args, manifest: dict | None) -> tuple[float, str]:
    if args.spacing is not None:
        if not (math.isfinite(args.spacing) and args.spacing > 0):
            raise SystemExit(f"error: --spacing must be a positive number of micrometres, got {args.spacing}")
        return float(args.spacing), "--spacing"
    px = (manifest or {}).get("pixel_size_um")
    if isinstance(px, dict) and px.get("x") and px.get("y"):
        x, y = float(px["x"]), float(px["y"])
        note = f"bundle pixel_size_um ({px.get('source', 'manifest')}{', estimated' if px.get('estimated') else ''})"
        if not math.isclose(x, y, rel_tol=1e-3):
            note += f"; anisotropic {x:g} x {y:g} um exported as their geometric mean (WSInfer has one spacing)"
        return math.sqrt(x * y), note
    raise SystemExit("error: the spacing of the network input is unknown: give --spacing (micrometres per input "
                     "pixel) or a --bundle whose manifest has pixel_size_um")


def _export_wsinfer(args) -> int:
    import numpy as np
    import torch

    from training.export_cli import load_run

    run, out = Path(args.run), Path(args.out)
    model, ckpt, metrics = load_run(run)
    temperature = float(metrics.get("temperature", 1.0))
    size = int(ckpt["preprocessing"]["size"])
    mean, std = ckpt["preprocessing"]["mean"], ckpt["preprocessing"]["std"]
    classes = list(ckpt["classes"])
    manifest = None
    if args.bundle:
        manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
        if manifest.get("classes") != classes:
            raise SystemExit(f"error: {args.bundle} has classes {manifest.get('classes')}, the run {classes}")
    spacing, spacing_source = _spacing(args, manifest)

    class CalibratedLogits(torch.nn.Module):
        def __init__(self, net: torch.nn.Module, t: float):
            super().__init__()
            self.net = net
            self.register_buffer("temperature", torch.tensor(t, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) / self.temperature

    wrapper = CalibratedLogits(model, temperature).eval()
    example = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(wrapper, example))
    out.mkdir(parents=True, exist_ok=True)
    traced.save(str(out / TORCHSCRIPT_FILE))
    config = wsinfer_config(architecture=ckpt["architecture"], classes=classes, size=size, spacing=spacing,
                            mean=mean, std=std)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    report = {"out": str(out), "spacing_um_px": spacing, "spacing_source": spacing_source,
              "temperature": temperature}

    if args.bundle:
        import onnxruntime as ort

        session = ort.InferenceSession(str(Path(args.bundle) / manifest["graphs"]["classify"]["file"]),
                                       providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)
        (probs,) = session.run(["probabilities"], {"image": x})
        loaded = torch.jit.load(str(out / TORCHSCRIPT_FILE))
        with torch.no_grad():
            ts_probs = torch.softmax(loaded(torch.from_numpy(x)), dim=1).numpy()
        diff = float(np.abs(ts_probs - probs).max())
        report["parity"] = {"probabilities_max_abs_diff": diff, "tolerance": PARITY_TOLERANCE}
        if not diff <= PARITY_TOLERANCE:
            print(json.dumps(report))
            print(f"error: TorchScript and {args.bundle} disagree by {diff:.2e} > {PARITY_TOLERANCE}")
            return 1
    print(json.dumps(report))
    return 0
