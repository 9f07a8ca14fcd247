"""Whole-slide images: jobs, tissue detection, tiling at the model's physical resolution, QuPath-ready results.

reader.py     OpenSlide, and the little kept of a slide (size, pyramid, pixel spacing)
resolution.py what one network input covers on the glass (manifest `pixel_size_um`, estimates)
tissue.py     tissue mask on a thumbnail (WSInfer's steps)
tiling.py     the tile grid and the pyramid level to read
pipeline.py   one slide end to end, shared by the HTTP jobs and the CLI
outputs.py    GeoJSON (QuPath), CSV, heatmap, slide-level summary
jobs.py       job records, their store (files; Redis later) and the manager that runs them
upload.py     streaming multipart upload straight to disk
service.py    the app's slide side (app.state.slides)
deepzoom.py   Deep Zoom tiles of the heatmap overlay with their transparency kept
__main__.py   `python -m service.slides SLIDE... --model NAME --out DIR`
"""
