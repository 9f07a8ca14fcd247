"""The usual way: a plain FastAPI endpoint on ONNX Runtime, one `session.run` per request, no batcher.

What a user writes with the same graph and the same session options the service uses
(`service.runtime.ModelRuntime` from the same HISTOSERVE_* settings) and the service's own
decoding: a sync handler in FastAPI's thread pool, decode, preprocess, run batch 1, softmax is in
the graph. The gain of the micro-batcher and the hot path is measured against this.

    python -m bench.plain --bundle model_store/NAME/VERSION --port 8101
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

import numpy as np
import uvicorn
from fastapi import FastAPI, File, UploadFile

from service.imaging import decode_image, preprocess
from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import load_bundle


def create_app(bundle_dir: Path, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    bundle = load_bundle(Path(bundle_dir))
    runtime = ModelRuntime(bundle, settings)
    classes = list(bundle.classes)
    app = FastAPI(title="plain FastAPI + ONNX Runtime endpoint")

    @app.get("/readyz")
    def readyz() -> dict:
        return {"ready": True, "provider": runtime.provider}

    @app.post("/classify")
    def classify(file: Annotated[UploadFile, File()]) -> dict:
        image = decode_image(file.file.read(), max_pixels=settings.max_image_pixels)
        probabilities = runtime.run(preprocess(image, bundle.preprocessing)[None])["probabilities"][0]
        best = int(np.argmax(probabilities))
        return {"label": classes[best], "score": float(probabilities[best])}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plain", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="bundle directory (NAME/VERSION)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.bundle), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
