"""The abuse suite shares the fault suite's scale, results directory and clips."""

from tests.faults.conftest import load_clips, results_dir, scale

__all__ = ["load_clips", "results_dir", "scale"]
