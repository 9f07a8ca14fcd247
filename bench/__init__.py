"""Benchmarks: the service against raw ONNX Runtime and against the naive eager-PyTorch endpoint.

`python -m bench` (or `make bench`) measures every bundle of a store and writes
`bench/results/<timestamp>.json` and `.md`. Every figure is a ratio taken in one run on one
machine, so the table says how close the service comes to the limit its own graph sets, not
how fast one machine is. Tests run the same code with `--quick`; no test asserts a timing.

Modules: `images` (the real PNGs), `raw` (ONNX Runtime alone), `servers` (uvicorn subprocesses
on loopback), `load` (the load generator, its own process), `naive` (the eager-PyTorch
endpoint), `plain` (FastAPI + ORT without batching), `floor` (the same uploads, no decode, no model:
what HTTP alone costs), `quantize` and `fp16` (int8 and float16-weight
copies, published through `derived`), `report` (ratios, targets, the table), `run` (the order of it
all). Alone: `sweep` (service settings side by side), `profile` (the event loop's CPU), `slides`
(the whole-slide pipeline), `accuracy`, `classifier_oos` and `adapter_oos` (what a served bundle
answers on real data).
"""
