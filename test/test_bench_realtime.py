"""``droil bench realtime`` end to end in a tiny configuration: real training, real ONNX Runtime and
torch, the real policy node as a process over DDS (domain 96..101, localhost only). Structure and
sanity only; timings on a shared machine are reported, never asserted."""

import json
import math
import random

import pytest

from droil_ros.bench.realtime import Settings, run
from droil_ros.errors import DroilError

DOMAIN = random.randint(96, 101)
TINY = Settings(rates=(200.0, 1000.0), window=1.0, warmup=0.3, swaps=2, swap_spacing=0.5, calls=300,
                paced_calls=20, train_steps=30, demo_episodes=2)


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

    inference = payload["inference"]
    assert len(inference["runtimes"]) == 6
    for name, stats in inference["runtimes"].items():
        _sane(stats)
        assert stats["n"] == (TINY.paced_calls if "per period" in name else TINY.calls), name
    assert inference["max_abs_diff_ort_vs_torch"] < 1e-4  # one policy, two runtimes

    assert [r["rate_hz"] for r in payload["closed_loop"]] == [200.0, 1000.0]
    for r in payload["closed_loop"]:
        assert r["states_answered"] > 0 and r["latency_ms"]["n"] == r["states_answered"]
        _sane(r["latency_ms"])
        assert 0 < r["latency_ms"]["min"] <= r["latency_ms"]["p50"]
        assert r["commands_received"] > 0 and r["commands_lost"] >= 0  # depth 1: a slow reader may lose
        # matching is bit-exact: every non-safe command was computed from a state the probe sent
        assert r["commands_unmatched"] == 0
        assert r["node"]["ticks"] > 0 and r["node"]["inference_p50_us"] > 0
        assert r["node_exit_code"] == 0

    swaps = payload["swaps"]
    assert len(swaps) == 2 and swaps[0]["to"] != swaps[1]["to"]
    for s in swaps:
        assert 0 < s["parameter_answer_ms"] and 0 < s["first_command_ms"] and 0 < s["swap_status_ms"]
        assert s["node_swap_ms"] > 0
        assert s["old_policy_commands_after"] == 0  # the swap is atomic between two ticks
    assert payload["swap_summary"]["first_command_ms"]["n"] == 2


def test_a_gymnasium_robot_is_refused(tmp_path):
    with pytest.raises(DroilError, match="observes through Gymnasium"):
        run("hopper", tmp_path, TINY, domain=DOMAIN)
    assert not list(tmp_path.iterdir())

