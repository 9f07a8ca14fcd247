"""`python -m service`: serve the app with uvicorn, one worker (the batcher is the concurrency)."""
from __future__ import annotations

import os
import sys

# ONNX Runtime owns the cores. numpy's BLAS (adapter heads, Grad-CAM maths: small matrices) would start a
# thread per core too, and under load the two pools contend: a 25 x 1,584 SVD took 2 s instead of 1 ms.
# Set before numpy loads; an explicit OPENBLAS_NUM_THREADS still wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import uvicorn  # noqa: E402

from .drain import DrainingServer  # noqa: E402
from .logs import configure  # noqa: E402
from .main import create_app  # noqa: E402
from .settings import Settings  # noqa: E402


def main() -> None:
    settings = Settings()
    configure(settings.log_level)
    # One process per GPU: several workers would each load every model and split the batches.
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, workers=1, access_log=False,
                            log_level=settings.log_level.lower(), timeout_graceful_shutdown=settings.shutdown_timeout_s)
    # SIGTERM: unready first, serve shutdown_delay_s more, then finish what is in flight (service/drain.py).
    server = DrainingServer(config, app, settings.shutdown_delay_s)
    server.run()
    if not server.started:
        sys.exit(3)  # start-up failed (as uvicorn.run exits)


if __name__ == "__main__":
    main()
