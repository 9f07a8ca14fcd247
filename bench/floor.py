"""The HTTP floor: what one /classify-shaped request costs before any image is decoded or any model runs.

Both endpoints take the same multipart upload as `/classify` and answer a small constant JSON body, on
the same uvicorn (httptools, uvloop) as the service:
  fastapi  a FastAPI route with an `UploadFile` parameter, read in full: the parsing bench.plain and the
           service do, without their decode, model or answer;
  asgi     a bare ASGI callable that reads the body and answers: no routing, no multipart parsing, the
           least any endpoint on this server spends.
An endpoint that spends what the floor spends per request takes 1/F of the machine per request besides
its model (F: the floor's requests/s at the same concurrency, load generator included), so against raw
ONNX Runtime at R images/s with decode its best throughput ratio is F / (F + R) (bench.report).

    python -m bench.floor --kind fastapi --port 8102
"""
from __future__ import annotations

import argparse
import json
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, UploadFile

ANSWER = b'{"label":"floor","score":1.0}'
KINDS = ("fastapi", "asgi")


def fastapi_app() -> FastAPI:
    app = FastAPI(title="HTTP floor: FastAPI upload, no model")

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True}

    @app.post("/classify")
    async def classify(file: Annotated[UploadFile, File()]) -> dict:
        await file.read()
        return json.loads(ANSWER)

    return app


async def asgi_app(scope, receive, send) -> None:
    """Every HTTP request: read the whole body, answer ANSWER (GET /readyz included)."""
    if scope["type"] == "lifespan":  # nothing to start or stop
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    args = parser.parse_args(argv)
    app = fastapi_app() if args.kind == "fastapi" else asgi_app
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")


if __name__ == "__main__":
    main()
