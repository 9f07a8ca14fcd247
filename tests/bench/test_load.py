import pytest

from bench.load import check_loopback, encode, run_spec


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/classify", "http://localhost:1/x", "http://127.9.9.9/x",
                                 "http://[::1]:8000/x"])
def test_loopback_targets_are_allowed(url):
    check_loopback(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000/classify", "http://192.168.1.2/x", "http://example.com/x",
                                 "http://8.8.8.8/x"])
def test_other_targets_are_refused(url):
    with pytest.raises(ValueError, match="loopback"):
        check_loopback(url)
    with pytest.raises(ValueError, match="loopback"):
        run_spec({"url": url, "bodies": [{"data": {"a": "b"}}], "concurrency": 1, "requests": 1, "seconds": 1})


def test_encode_builds_one_multipart_body_with_repeated_fields(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG fake bytes")
    body, content_type = encode("http://127.0.0.1/adapt", {"files": [["files", str(png)], ["files", str(png)]],
                                                           "data": {"model": "m/1", "labels": ["x", "y"]}})
    assert content_type.startswith("multipart/form-data; boundary=")
    assert body.count(b'name="files"; filename="a.png"') == 2
    assert body.count(b'name="labels"') == 2
    assert b"\x89PNG fake bytes" in body and b"m/1" in body
