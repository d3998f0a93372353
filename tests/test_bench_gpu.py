"""benchmarks/bench_gpu.py without a GPU: it says so and exits 0; its sync counter counts
what torch's sync debug mode reports during the training steps after the untimed ones."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

bench_gpu = pytest.importorskip("bench_gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_it_says_so_and_exits_0(capsys) -> None:
    assert bench_gpu.main([]) == 0
    assert "no CUDA device here, nothing measured" in capsys.readouterr().out


def test_sync_counter_counts_step_syncs_after_the_untimed_steps(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: None)
    batches = [(torch.zeros(1), torch.zeros(1))] * 20
    data = bench_gpu.DeviceTimedBatches(batches, skip=5, device=torch.device("cpu"), timed=False)

    def run(data, phases) -> None:  # two syncs per step, one warning of another kind
        phases.phase = "steps"
        for _ in data:
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
        phases.phase = "other"
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)  # after the steps

    assert bench_gpu.count_syncs(run, data) == 2.0
