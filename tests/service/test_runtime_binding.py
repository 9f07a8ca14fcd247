"""IOBinding (the CUDA path) gives what session.run gives, and the CPU path does not use it."""
from __future__ import annotations

import numpy as np
import pytest

from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import load_bundle
from tests.service.conftest import SIZE


@pytest.fixture()
def runtime(bundles):
    settings = Settings(model_store=bundles["store"], providers=["CPUExecutionProvider"])
    return ModelRuntime(load_bundle(bundles["store"] / "tiny_cls" / "1"), settings)


def test_the_cpu_path_is_plain_session_run(runtime, monkeypatch):
    assert runtime.provider == "CPUExecutionProvider" and runtime.io_binding_device is None

    def no_binding():
        raise AssertionError("IOBinding used on the CPU provider")

    monkeypatch.setattr(runtime.session, "io_binding", no_binding, raising=False)
    out = runtime.run(np.zeros((2, 3, SIZE, SIZE), dtype=np.float32))
    assert set(out) == set(runtime.output_names) and len(out["probabilities"]) == 2


@pytest.mark.parametrize("batch", [1, 3])
def test_the_bound_run_matches_session_run(runtime, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    plain = runtime.run(x)
    runtime.io_binding_device = "cpu"  # the CUDA code path, with its outputs bound on the CPU
    bound = runtime.run(x[:, :, :, :])  # a view, as the batcher's buffer slice is
    assert set(bound) == set(plain)
    for name in plain:
        assert bound[name].shape == plain[name].shape and bound[name].dtype == plain[name].dtype
        np.testing.assert_array_equal(bound[name], plain[name])
