"""``hark scale-sim``: a small trace through the scaling rules; the plot, and pack 2 untouched by pack 1's spike."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hark.cli import main as hark_main
from hark.scale_sim import PackModel, read_config, read_trace, simulate

CONFIG = """
defaults: {lanes: 2, floor: 2, budget: 16, idle_seconds: 10, target: 5, scale_down_window: 60,
           max_replicas: 6, pod_start_seconds: 5}
packs:
  en: {service_seconds: 1.0}
  hi: {service_seconds: 2.0}
"""


def _write_trace(path: Path, spike: bool) -> Path:
    rows = ["t_seconds,pack,arrivals"]
    for second in range(240):
        rows.append(f"{second},hi,{1 if second % 2 == 0 else 0}")  # 0.5 job/s: one pod's lanes keep up
        en = 12 if spike and 30 <= second < 60 else (1 if second % 4 == 0 else 0)
        if en:
            rows.append(f"{second},en,{en}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_pack_1s_spike_scales_only_pack_1(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    calm_trace, spike_trace = read_trace(_write_trace(tmp_path / "calm.csv", False)), read_trace(
        _write_trace(tmp_path / "spike.csv", True))  # fmt: skip
    models = read_config(config, ["en", "hi"])
    assert models["hi"] == PackModel(service_seconds=2.0, lanes=2, floor=2, budget=16, idle_seconds=10, target=5,
                                     scale_down_window=60, max_replicas=6, pod_start_seconds=5)  # fmt: skip
    calm, spiked = simulate(calm_trace, models, 400), simulate(spike_trace, models, 400)

    assert spiked["en"].summary()["max_pods"] > calm["en"].summary()["max_pods"] == 1
    assert spiked["en"].summary()["max_capacity"] > 2 * models["en"].floor
    assert spiked["en"].pods[-1] == 1 and spiked["en"].capacity[-1] == models["en"].floor, "back to the floor"
    # Pack 2's whole run is the same number for number, with or without pack 1's spike.
    hi_calm, hi_spiked = calm["hi"], spiked["hi"]
    assert hi_spiked.pods == hi_calm.pods and hi_spiked.capacity == hi_calm.capacity
    assert hi_spiked.queue_depth == hi_calm.queue_depth and hi_spiked.waits == hi_calm.waits
    assert [w for w in hi_spiked.wait if not math.isnan(w)] == [w for w in hi_calm.wait if not math.isnan(w)]
    assert hi_spiked.summary()["jobs"] == 120


def test_the_command_prints_the_table_and_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "plots" / "sim.png"
    trace = _write_trace(tmp_path / "spike.csv", True)
    assert hark_main(["scale-sim", str(trace), "--config", str(config), "--out", str(out), "--duration", "300"]) == 0
    printed = capsys.readouterr().out
    assert "max pods" in printed and printed.count("\nen ") == 1 and "\nhi " in printed
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height > 300


@pytest.mark.parametrize(
    ("trace", "config", "message"),
    [
        ("t,pack,arrivals\n1,en,2\n", "", "missing column(s) t_seconds"),
        ("t_seconds,pack,arrivals\n1,en,many\n", "", ":2: t_seconds and arrivals must be numbers"),
        ("t_seconds,pack,arrivals\n1,en,2\n", "defaults: {lanse: 2}", "unknown key(s) lanse"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str], trace: str,
                                              config: str, message: str) -> None:  # fmt: skip
    (tmp_path / "t.csv").write_text(trace, encoding="utf-8")
    (tmp_path / "c.yaml").write_text(config, encoding="utf-8")
    assert hark_main(["scale-sim", str(tmp_path / "t.csv"), "--config", str(tmp_path / "c.yaml")]) == 2
    assert message in capsys.readouterr().err
