"""`python -m service`: serve the app with uvicorn, one worker (the batcher is the concurrency)."""
from __future__ import annotations

import sys

import uvicorn

from .drain import DrainingServer
from .logs import configure
from .main import create_app
from .settings import Settings


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
