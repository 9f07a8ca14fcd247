"""bench.profile: the event loop's CPU per request, read while the real load generator drives /classify."""
import json

import pytest

from bench import profile


@pytest.mark.parametrize("flags", [["--no-profile"], []])
def test_profile_measures_the_event_loop_under_load(tiny_store, ebhi_dir, tmp_path, flags):
    rc = profile.main(["--requests", "10", "--top", "5", "--model-store", str(tiny_store),
                       "--data-dir", str(ebhi_dir.parent), "--out-dir", str(tmp_path), *flags])
    assert rc == 0
    (out,) = tmp_path.glob("profile-*.json")
    result = json.loads(out.read_text())
    assert result["requests_ok"] == 10 and result["event_loop_cpu_ms_per_request"] > 0
    assert result["profiled"] == (not flags) and bool(result["top_by_own_time"]) == (not flags)
