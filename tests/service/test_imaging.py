"""Decoding uploads: formats, modes, EXIF orientation, and each kind of bad file."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.imaging import ImageError, decode_image, preprocess
from service.store import Preprocessing
from tests.service.conftest import encode

LIMIT = 10_000_000


def _rgb(h=6, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_formats_round_trip(fmt):
    arr = _rgb()
    img = decode_image(encode(arr, fmt), max_pixels=LIMIT)
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), arr)


def test_lossy_formats_decode():
    arr = _rgb(16, 16)
    for fmt in ("JPEG", "WEBP"):
        img = decode_image(encode(arr, fmt, quality=100), max_pixels=LIMIT)
        assert img.mode == "RGB" and img.size == (16, 16)


def test_modes_become_rgb():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    assert np.array_equal(np.asarray(decode_image(encode(gray), max_pixels=LIMIT))[..., 1], gray)

    sixteen = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    img16 = Image.fromarray(sixteen)
    img = decode_image(encode(img16), max_pixels=LIMIT)
    assert np.abs(np.asarray(img)[..., 0].astype(int) - np.rint(sixteen / 65535 * 255)).max() <= 1

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red; transparent becomes white
    out = np.asarray(decode_image(encode(rgba), max_pixels=LIMIT))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)

    pal = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    assert decode_image(encode(pal), max_pixels=LIMIT).mode == "RGB"


def test_exif_orientation_is_applied():
    arr = _rgb(4, 8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=100)
    assert decode_image(buf.getvalue(), max_pixels=LIMIT).size == (4, 8)


def _bomb(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("data,status,code", [
    (b"", 422, "empty_file"),
    (b"just some text pretending to be a png" * 4, 415, "unsupported_image"),
    (encode(_rgb(64, 64))[:200], 415, "corrupt_image"),
    (encode(_rgb(64, 64), "JPEG")[:2000], 415, "corrupt_image"),
    (b"GIF89a" + b"\x00" * 40, 415, "unsupported_image"),  # a format we do not accept
], ids=["empty", "text", "truncated-png", "truncated-jpeg", "gif"])
def test_bad_files(data, status, code):
    with pytest.raises(ImageError) as e:
        decode_image(data, max_pixels=LIMIT)
    assert (e.value.status, e.value.code) == (status, code)


def test_decompression_bomb_is_refused_from_the_header(monkeypatch):
    data = _bomb(200_000, 200_000)  # 4e10 pixels in ~70 bytes
    assert len(data) < 100

    def no_pixels(self):
        raise AssertionError("pixel data was decoded for an image refused by its header")

    monkeypatch.setattr(Image.Image, "load", no_pixels)
    for limit in (LIMIT, 10**12):  # our limit, and Pillow's own guard behind it
        with pytest.raises(ImageError) as e:
            decode_image(data, max_pixels=limit)
        assert e.value.status == 413 if limit == LIMIT else e.value.status in (413, 415)
    monkeypatch.undo()
    with pytest.raises(ImageError, match="exceeds the limit of 100"):
        decode_image(encode(_rgb(20, 20)), max_pixels=100)


def test_preprocess_follows_the_manifest():
    pre = Preprocessing(resize=(4, 5), interpolation="nearest", scale=1 / 255, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    arr = _rgb(4, 5)
    x = preprocess(Image.fromarray(arr), pre)
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    expected = ((arr / 255.0 - np.array(pre.mean)) / np.array(pre.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected, atol=1e-5)
    assert preprocess(Image.fromarray(_rgb(40, 30)), pre).shape == (3, 4, 5)
    # Written straight into a caller's buffer (a row of a batch), with the same values.
    buffer = np.full((2, 3, 4, 5), np.nan, dtype=np.float32)
    assert preprocess(Image.fromarray(arr), pre, out=buffer[1]) is not None
    np.testing.assert_array_equal(buffer[1], x)
    assert np.isnan(buffer[0]).all()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_preprocess_of_every_decoded_mode_is_contiguous_float32(mode):
    pre = Preprocessing(resize=(8, 8), interpolation="bilinear", scale=1 / 255, mean=(0.5,) * 3, std=(0.25,) * 3)
    img = decode_image(encode(Image.fromarray(_rgb(10, 12)).convert(mode)), max_pixels=LIMIT)
    x = preprocess(img, pre)
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == (3, 8, 8)
    assert np.isfinite(x).all() and -2.0 - 1e-6 <= x.min() and x.max() <= 2.0 + 1e-6
