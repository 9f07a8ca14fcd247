"""`python -m service`: serve the app with uvicorn, one worker (the batcher is the concurrency)."""
from __future__ import annotations

import uvicorn

from .logs import configure
from .main import create_app
from .settings import Settings


def main() -> None:
    settings = Settings()
    configure(settings.log_level)
    # One process per GPU: several workers would each load every model and split the batches.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, workers=1,
                access_log=False, log_level=settings.log_level.lower(), timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
