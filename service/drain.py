"""Graceful stop for rolling updates: unready first, then finish what is in flight, then exit.

On the first SIGTERM (or SIGINT) the app turns unready at once (`/readyz` answers 503 with
`draining: true`) and goes on serving for `shutdown_delay_s`, the time a load balancer or Kubernetes
needs to stop sending it new requests. Then uvicorn's own graceful shutdown runs: no new connections,
requests in flight get `shutdown_timeout_s` to finish (then they are cancelled), the lifespan stops the
batcher. A second signal during the delay skips the rest of it.
"""
from __future__ import annotations

import logging
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("histoserve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, delay_s: float):
        super().__init__(config)
        self.app, self.delay_s = app, delay_s
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._exit_at is None and self.delay_s > 0 and not self.should_exit:
            self.app.state.ready, self.app.state.draining = False, True
            self._exit_at = time.monotonic() + self.delay_s
            self._captured_signals.append(sig)  # uvicorn re-raises it after shutdown, as it does itself
            log.info("signal %d: unready, serving for %.1f s more, then draining", sig, self.delay_s)
            return
        self.app.state.ready, self.app.state.draining = False, True
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)
