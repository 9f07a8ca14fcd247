"""POST /slides bodies: a multipart stream parsed as it arrives, the slide written straight to disk.

Starlette's form parsing would spool the file and then hand it over whole; a multi-GB slide must
instead go to its job directory chunk by chunk, counted against `HISTOSERVE_MAX_SLIDE_BYTES`, and
be cut off (413) the moment it passes the limit. The small form fields (model, mpp, ...) are
kept in memory, each bounded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..errors import ServiceError

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 16


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # where the slide was written, when the body had one
    file_bytes: int = 0
    extension: str = ""  # of the client's file name, lower case (".svs"); the name itself is not kept


def _extension(filename: str) -> str:
    ext = os.path.splitext(os.path.basename(filename.replace("\\", "/")))[1].lower()
    return ext if ext.isascii() and 1 < len(ext) <= 8 and ext[1:].isalnum() else ""


async def receive(request: Request, destination, *, max_file_bytes: int) -> Upload:
    """Parse the multipart body; the part named `file` goes to `destination(extension) -> Path`."""
    content_type = request.headers.get("content-type", "")
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ServiceError(415, "unsupported_media_type",
                           f"expected a multipart/form-data body, got {content_type or 'no content type'!r}")
    upload = Upload()
    state: dict = {"header": b"", "value": b"", "headers": {}, "name": None, "is_file": False, "buf": bytearray(),
                   "out": None, "ended": False}

    def on_part_begin() -> None:
        state.update(headers={}, name=None, is_file=False, buf=bytearray(), header=b"", value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header"].lower()] = state["value"]
        state["header"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        filename = disposition.get(b"filename")
        if name == "file" and filename is not None:
            if upload.file is not None:
                raise ServiceError(422, "invalid_request", "one slide per request: the body has two `file` parts")
            upload.extension = _extension(filename.decode("utf-8", "replace"))
            upload.file = destination(upload.extension)
            state["out"] = open(upload.file, "wb")  # noqa: SIM115 - closed in on_part_end or below
            state["is_file"] = True
        elif len(upload.fields) >= MAX_FIELDS:
            raise ServiceError(422, "invalid_request", f"more than {MAX_FIELDS} form fields")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["is_file"]:
            upload.file_bytes += end - start
            if upload.file_bytes > max_file_bytes:
                raise ServiceError(413, "slide_too_large",
                                   f"the slide exceeds the limit of {max_file_bytes} bytes (HISTOSERVE_MAX_SLIDE_BYTES)")
            state["out"].write(data[start:end])
        else:
            state["buf"] += data[start:end]
            if len(state["buf"]) > MAX_FIELD_BYTES:
                raise ServiceError(422, "invalid_request", f"form field {state['name']!r} is longer than "
                                   f"{MAX_FIELD_BYTES} bytes")

    def on_part_end() -> None:
        if state["is_file"]:
            state["out"].close()
            state["out"] = None
        elif state["name"]:
            upload.fields[state["name"]] = bytes(state["buf"]).decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": lambda: state.update(ended=True)})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect as e:
        raise ServiceError(400, "bad_request", "the client went away before the upload finished") from e
    except ServiceError:
        raise
    except Exception as e:  # the multipart parser's own errors: a malformed body
        raise ServiceError(400, "bad_request", f"malformed multipart body: {e}") from e
    finally:
        if state["out"] is not None:
            state["out"].close()
    if not state["ended"]:
        # A cut-off upload must not become a truncated slide on disk that looks complete.
        raise ServiceError(400, "bad_request", "the multipart body ends before its closing boundary")
    if upload.file is not None and upload.file_bytes == 0:
        raise ServiceError(422, "empty_file", "the slide file is empty")
    return upload
