"""histoserve's inference service: FastAPI on ONNX Runtime, reading bundles from a model store.

`create_app()` in service.main builds the app; `python -m service` serves it with uvicorn.
Nothing here imports torch, `models` or `training`: a bundle is all the service needs.
"""
