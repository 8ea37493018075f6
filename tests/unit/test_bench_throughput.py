"""The pure parts of ``bench/throughput.py``: closed-loop load, statistics, WER and the option parsers."""

from __future__ import annotations

import threading
import time

import pytest

from bench.throughput_load import (
    Clip,
    closed_loop,
    normalize,
    parse_grid,
    parse_side,
    percentile,
    request_list,
    split_rounds,
    summarize,
)


def clip(index: int, text: str = "call me back tomorrow", seconds: float = 2.0) -> Clip:
    return Clip(f"c{index}", b"", seconds, text)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.50) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN


def test_request_list_repeats_whole_passes() -> None:
    clips = [clip(i) for i in range(20)]
    assert request_list(clips, 1, 40) == clips * 2
    assert request_list(clips, 32, 40) == clips * 4  # two per client: 64 -> 80
    assert len(request_list(clips[:6], 4, 6)) == 12


def test_split_rounds_keeps_two_requests_per_client() -> None:
    requests = [clip(i) for i in range(40)]
    assert [len(chunk) for chunk in split_rounds(requests, 2, 8)] == [20, 20]
    assert [len(chunk) for chunk in split_rounds(requests, 2, 32)] == [40]  # 20 a round would be < 2 per client
    assert [item for chunk in split_rounds(requests, 3, 1) for item in chunk] == requests


def test_closed_loop_keeps_at_most_n_in_flight_and_counts_errors() -> None:
    clips = [clip(i) for i in range(12)]
    in_flight, peak, lock = [0], [0], threading.Lock()

    def call(item: Clip) -> str:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.01)
        with lock:
            in_flight[0] -= 1
        if item.name == "c5":
            raise ConnectionError("refused")
        return item.reference.upper() + "."

    outcomes, wall = closed_loop(call, clips, 3, deadline_seconds=30)
    assert peak[0] == 3 and len(outcomes) == 12 and wall >= 0.04
    summary = summarize("side", "short", 3, outcomes, wall)
    assert summary.errors == 1 and summary.error_kinds == ["ConnectionError: refused"]
    assert summary.audio_seconds == 22.0 and summary.wer == 0.0  # case and punctuation are normalised
    assert summary.throughput == pytest.approx(22.0 / wall)


def test_closed_loop_deadline_counts_the_unanswered() -> None:
    release = threading.Event()
    outcomes, _wall = closed_loop(lambda item: release.wait(5) and "", [clip(i) for i in range(4)], 2, 0.05)
    release.set()
    assert sum(outcome.error == "level deadline" for outcome in outcomes) == 4


def test_wer_counts_wrong_words() -> None:
    outcomes, wall = closed_loop(lambda item: "call me back today", [clip(0)], 1, 5)
    assert summarize("s", "short", 1, outcomes, wall).wer == pytest.approx(0.25)


def test_numbers_below_100_are_scored_as_words() -> None:
    spoken = "platform four every twenty minutes twenty one or 100"
    assert normalize("Platform 4, every 20 minutes; 21 or 100.") == spoken


def test_parse_side_and_grid() -> None:
    assert parse_side("hark-current") == ("hark-current", {})
    assert parse_side("batching:HARK_A=1, HARK_B=x=y") == ("batching", {"HARK_A": "1", "HARK_B": "x=y"})
    with pytest.raises(ValueError):
        parse_side("bad:HARK_A")
    with pytest.raises(ValueError):
        parse_side(":HARK_A=1")
    assert parse_grid("1x2x1, 2x1") == [(1, 2, 1), (2, 1, 2)]
    with pytest.raises(ValueError):
        parse_grid("0x2")
