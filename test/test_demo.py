"""``droil demo`` end to end in a tiny configuration: every stage over real DDS, real MuJoCo,
real training and ONNX Runtime; Ctrl-C leaves no node running. ROS domains 91-95."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosgraph import ros_env

from droil_ros.data.dataset import load_dataset
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots import load_spec
from droil_ros.sim.lqr import LQRController

DOMAIN = random.randint(91, 95)
SPEC = load_spec("wheel_legged")
# deployment in real time on a mildly perturbed robot: the pipeline, not the robustness, is tested
TINY = ["--seconds", "3", "--episode-seconds", "1.5", "--learner", "bc", "--learner", "be_droil",
        "--steps", "150", "--seeds", "2", "--eval-episodes", "2", "--eval-seconds", "1.5",
        "--perturb", "payload=0.5"]


def demo(*args: str, **popen) -> subprocess.Popen:
    env = dict(os.environ, **ros_env(DOMAIN))
    return subprocess.Popen([sys.executable, "-m", "droil_ros.cli", "demo", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def running_nodes() -> list[str]:
    """Command lines of node processes on this module's ROS domain."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if "droil_ros.nodes." in cmdline and f"ROS_DOMAIN_ID={DOMAIN}".encode() in environ:
            found.append(cmdline)
    return found


def test_demo_runs_every_stage(tmp_path):
    run = tmp_path / "run"
    proc = demo(*TINY, "--out", str(run))
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert not running_nodes()
    summary = json.loads((run / "results.json").read_text())

    # the bag holds the demonstrations; the dataset pairs each action with its own state
    with Reader(summary["bag"]) as reader:
        assert {"/joint_states", "/imu/data", "/effort_controller/commands"} <= set(reader.topics)
    ds = load_dataset(summary["dataset"])
    # the converter drops few states for want of a command or after a lost one; how many states a
    # realtime bridge steps in 3 s is the machine's business (fewer when it is loaded)
    source = ds.meta["source"]
    states = int(re.search(r"from (\d+) states", source).group(1))
    dropped = re.search(r"dropped: (\d+) states without a command, (\d+) before a lost state", source)
    assert len(ds) == summary["dataset_transitions"] > 100, source
    assert sum(map(int, dropped.groups())) <= 0.1 * states, source
    assert ds.n_episodes == summary["dataset_episodes"] == 2
    lqr = LQRController(SPEC)
    np.testing.assert_allclose(ds.actions[:, 0], [lqr(o)[0] for o in ds.observations.astype(np.float64)],
                               rtol=1e-5, atol=1e-5)

    # one ONNX per seed and learner, made for this robot
    for name in ("bc", "be_droil"):
        paths = summary["training"][name]["policies"]
        assert [Path(p).name for p in paths] == [f"{name}_seed0.onnx", f"{name}_seed1.onnx"]
        for path in paths:
            OnnxPolicy(path).validate_against(SPEC)

    # deployment: the LQR and both policies measured on the same initial tilts
    results = summary["results"]
    assert list(results) == ["lqr", "bc", "be_droil"]
    tilts = {name: [e["tilt0"] for e in r["per_episode"]] for name, r in results.items()}
    assert tilts["lqr"] == tilts["bc"] == tilts["be_droil"] and len(tilts["lqr"]) == 2
    assert results["lqr"]["falls"] < 2  # real time on a loaded machine may topple one episode
    for name, r in results.items():
        assert r["episodes"] == 2
        assert np.isfinite([r["return"], r["mean_abs_tilt"], r["speed_rms_error"]]).all()
        for episode in r["per_episode"]:  # a full episode of states at 200 Hz, or a fall
            assert episode["fell"] or episode["seconds"] >= 1.5 - 1e-6
            assert episode["states"] >= 0.8 * (episode["seconds"] * SPEC.control_rate_hz)
        assert (r["swap_ms"] is None) == (name == "lqr")
        assert name == "lqr" or r["swap_ms"] > 0
    for episode in results["lqr"]["per_episode"]:  # balanced: reward close to 1 per state
        assert episode["fell"] or episode["ret"] > 0.9 * (episode["states"] - 1)
    assert (run / "results.png").stat().st_size > 0
    row = f"| lqr | {results['lqr']['falls']}/2 |"
    assert row in (run / "results.md").read_text() and row in output


def test_ctrl_c_stops_every_node(tmp_path):
    run = tmp_path / "run"
    proc = demo("--seconds", "60", "--out", str(run))
    deadline = time.monotonic() + 120
    while not (run / "bags").exists() or not (run / "logs" / "sim_bridge.log").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    time.sleep(2.0)  # recording
    assert running_nodes()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    assert not running_nodes()


def test_bad_options_fail_before_anything_starts(tmp_path):
    for args, reason in ((["--perturb", "mass=-1"], "mass"), (["--learner", "nope"], "unknown learner"),
                         (["--robot", "hopper"], "JointState + Imu")):
        proc = demo(*args, "--out", str(tmp_path / "run"))
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 2 and reason in output and "Traceback" not in output, output
        assert not (tmp_path / "run").exists()
