"""The naive alternative: the FastAPI endpoint a user writes without a serving stack.

One eager PyTorch forward per request, no batching, no ONNX: decode with Pillow, resize,
normalise, `model(x)` under `torch.no_grad()`, softmax. The network is rebuilt from the
bundle's manifest (`architecture`, `model_args`) with `models.create_model`, so it is the
same architecture as the ONNX graph. Weights: a training checkpoint (`--checkpoint`, the
`model` entry of training's checkpoints) when given, else random initialisation, which
costs exactly the same compute and is reported as such.

    python -m bench.naive --bundle model_store/NAME/VERSION --port 8100 [--checkpoint ckpt.pt]
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image

import models


def load_network(bundle_dir: Path, checkpoint: Path | None = None) -> tuple[torch.nn.Module, dict]:
    """The bundle's architecture as an eager network, in eval mode, and its manifest."""
    manifest = json.loads((Path(bundle_dir) / "manifest.json").read_text(encoding="utf-8"))
    model = models.create_model(manifest["architecture"], **manifest.get("model_args", {}))
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state), strict=True)
    return model.eval(), manifest


def create_app(bundle_dir: Path, checkpoint: Path | None = None) -> FastAPI:
    model, manifest = load_network(bundle_dir, checkpoint)
    pre = manifest["preprocessing"]
    height, width = pre["resize"]
    mean = torch.tensor(pre["mean"]).view(3, 1, 1)
    std = torch.tensor(pre["std"]).view(3, 1, 1)
    classes = manifest["classes"]
    app = FastAPI(title="naive eager PyTorch endpoint")
    app.state.weights = "checkpoint" if checkpoint else "random init"

    @app.get("/readyz")
    def readyz() -> dict:
        return {"ready": True, "weights": app.state.weights, "torch_threads": torch.get_num_threads()}

    @app.post("/classify")
    def classify(file: Annotated[UploadFile, File()]) -> dict:
        image = Image.open(io.BytesIO(file.file.read())).convert("RGB").resize((width, height), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = ((x - mean) / std).unsqueeze(0)
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)[0]
        best = int(probabilities.argmax())
        return {"label": classes[best], "score": float(probabilities[best])}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory (NAME/VERSION)")
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint; random init without it")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.bundle, args.checkpoint), host=args.host, port=args.port, access_log=False,
                log_level="warning")


if __name__ == "__main__":
    main()
