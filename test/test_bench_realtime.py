"""``droil bench realtime`` end to end in a tiny configuration: real training, real ONNX Runtime and
torch, the real policy node as a process over DDS (domain 96..101, localhost only). Structure and
sanity only; timings on a shared machine are reported, never asserted."""

import json
import math
import random

import numpy as np
import pytest

from droil_ros.bench.realtime import Settings, run, tick_health
from droil_ros.errors import DroilError

DOMAIN = random.randint(96, 101)
TINY = Settings(rates=(200.0, 1000.0), window=1.0, warmup=0.3, swaps=2, swap_spacing=1.0, floor=0.5,
                calls=300, paced_calls=20, train_steps=30, demo_episodes=2)


def _sane(stats: dict) -> None:
    values = [stats[k] for k in ("p50", "p99", "max")]
    assert all(math.isfinite(v) and v > 0 for v in values), stats
    assert stats["p50"] <= stats["p99"] <= stats["max"], stats


def test_realtime_bench_tiny(tmp_path):
    payload = run("wheel_legged", tmp_path, TINY, seed=0, quick=True, domain=DOMAIN)
    assert json.loads((tmp_path / "realtime_quick.json").read_text()) == json.loads(json.dumps(payload))
    markdown = (tmp_path / "realtime_quick.md").read_text()
    assert "load average" in markdown and "## 3. Hot-swap at 200 Hz" in markdown
    assert len(payload["load_average_start"]) == 3 and payload["machine"]["versions"]["onnxruntime"]
    assert payload["cpu_steal"] is None or 0.0 <= payload["cpu_steal"] < 1.0

    inference = payload["inference"]
    assert len(inference["runtimes"]) == 8
    for name, stats in inference["runtimes"].items():
        _sane(stats)
        assert stats["n"] == (TINY.paced_calls if "per period" in name else TINY.calls), name
    assert inference["max_abs_diff_ort_vs_torch"] < 1e-4  # one policy, two runtimes
    assert len(payload["decoding"]) == 4 and "the node's decoder" in markdown
    for stats in payload["decoding"].values():
        _sane(stats)
        assert stats["n"] == TINY.calls

    controllers = ["policy node (timer)", "policy node (state)", "policy node (state, events executor)",
                   "bare rclpy echo", "bare rclpy echo (events executor)"]
    assert [(r["rate_hz"], r["controller"]) for r in payload["closed_loop"]] == [
        (rate, controller) for rate in (200.0, 1000.0) for controller in controllers]
    assert "p99 / echo p99" in markdown
    for r in payload["closed_loop"]:
        assert r["states_answered"] > 0 and r["latency_ms"]["n"] == r["states_answered"]
        _sane(r["latency_ms"])
        assert 0 < r["latency_ms"]["min"] <= r["latency_ms"]["p50"]
        assert r["commands_received"] > 0 and r["commands_lost"] >= 0  # depth 1: a slow reader may lose
        # matching is bit-exact: every non-safe command was computed from a state the probe sent
        assert r["commands_unmatched"] == 0
        if r["controller"].startswith("bare rclpy echo"):
            assert r["node"]["ticks"] is None  # no diagnostics: nothing but the round trip
        else:
            assert r["node"]["ticks"] > 0 and r["node"]["inference_p50_us"] > 0
        assert r["node_exit_code"] == 0

    swaps = payload["swaps"]
    assert len(swaps) == 2 and swaps[0]["to"] != swaps[1]["to"]
    for s in swaps:
        assert 0 < s["parameter_answer_ms"] and 0 < s["first_command_ms"] and 0 < s["swap_status_ms"]
        assert s["node_swap_ms"] > 0
        assert s["old_policy_commands_after"] == 0  # the swap is atomic between two ticks
        # each 0.5 s + the swap time (with the vetting process, 1-2 s; more under load), less where
        # commands lapse
        for window in (s, s["control"]):
            assert 0.0 < window["window_s"] < 10.0 and window["longest_gap_ms"] > 0
            assert window["late_ticks"] >= 0 and window["missed_ticks"] >= 0
    summary = payload["swap_summary"]
    assert summary["first_command_ms"]["n"] == 2
    assert summary["swap"]["late_ticks"] == sum(s["late_ticks"] for s in swaps)
    assert summary["control"]["window_s"] == sum(s["control"]["window_s"] for s in swaps)
    floor = payload["floor"]
    assert floor["rate_hz"] == 200.0 and floor["window_s"] > 0.45  # longer where the machine stalls it
    assert "control window" in markdown and "bare Python loop" in markdown


def test_late_and_missed_ticks_at_200_hz():
    ms = 1e-3
    on_time = tick_health(np.full(10, 5 * ms), 5 * ms)
    assert (on_time["late_ticks"], on_time["missed_ticks"]) == (0, 0)
    late = tick_health(np.array([5, 5, 7.6, 2.4, 5]) * ms, 5 * ms)  # one tick 2.6 ms late, none lost
    assert (late["late_ticks"], late["missed_ticks"]) == (1, 0)
    skipped = tick_health(np.array([5, 15, 5, 11, 4]) * ms, 5 * ms)  # 2 skipped, then 1 late + 1 skipped
    assert (skipped["late_ticks"], skipped["missed_ticks"]) == (2, 3)
    assert skipped["longest_gap_ms"] == 15.0


def test_a_gymnasium_robot_and_a_bad_priority_are_refused(tmp_path):
    with pytest.raises(DroilError, match="thread priority"):
        run("wheel_legged", tmp_path, Settings(thread_priority=100), domain=DOMAIN)
    with pytest.raises(DroilError, match="observes through Gymnasium"):
        run("hopper", tmp_path, TINY, domain=DOMAIN)
    assert not list(tmp_path.iterdir())

