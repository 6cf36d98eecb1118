"""Longest command gap while the policy node is asked to swap to attack files, against the
no-swap baseline in the same run (issue #16): a 1 GiB file (sparse), a policy whose session
builds just within a control period, one under ``max_policy_bytes`` whose build takes longer, a
policy whose inference never ends, and a slow one (about 80 ms per inference). Also the ONNX
builders of those files, which test/test_policy_attacks.py uses.

    python -m droil_ros.bench.swap_attacks [--json out.json]

One policy node (autostart, 200 Hz, default limits, ``--thread-priority``) serves a linear
policy to a client that publishes the sensors at 100 Hz and records every command with its
source timestamp (the node's send time, so the client's own scheduling does not count). A gap is
the time between two consecutive commands; the swap window runs from the request to 0.2 s after
its outcome on ``~/swap_status``. The baseline is ``--baseline`` s without a swap (as long as the
longest swap window, the hanging policy's ``vet_timeout``), before the first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, load_model, numpy_helper, save_model
from onnx.external_data_helper import convert_model_to_external_data

from droil_ros.robots import RobotSpec, load_spec

SPEC = load_spec("wheel_legged")
TILT = 0.1


def _metadata(spec: RobotSpec) -> dict[str, str]:
    return {"robot_id": spec.id, "robot_hash": spec.hash, "obs_names": json.dumps(spec.obs_names),
            "action_names": json.dumps(spec.action_names), "action_low": json.dumps(spec.action_low.tolist()),
            "action_high": json.dumps(spec.action_high.tolist())}


def _policy(path: Path, nodes: list, initializers: list, result: str = "m") -> Path:
    """obs (batch, 4) -> m = obs @ W (the theta gain 1) -> ``nodes`` -> action = ``result``."""
    weights = np.zeros((SPEC.obs_dim, SPEC.act_dim), np.float32)
    weights[0, 0] = 1.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["m"]), *nodes,
         helper.make_node("Identity", [result], ["action"])],
        "policy", [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", SPEC.obs_dim])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", SPEC.act_dim])],
        [numpy_helper.from_array(weights, "W"), *initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    helper.set_model_props(model, _metadata(SPEC))
    path.write_bytes(model.SerializeToString())
    return path


def _scalar(name: str, value, dtype=np.float32):
    return numpy_helper.from_array(np.array(value, dtype), name)


def linear(path: Path) -> Path:
    return _policy(path, [], [])


def nan_always(path: Path) -> Path:
    """0/0 added to every action."""
    nodes = [helper.make_node("Div", ["zero", "zero"], ["nan"]), helper.make_node("Add", ["m", "nan"], ["y"])]
    return _policy(path, nodes, [_scalar("zero", [0.0])], "y")


def nan_near_tilt(path: Path, tilt: float) -> Path:
    """NaN only when theta is within 0.01 of ``tilt`` (sqrt(-1)): none of the vetting batch's
    observations, but what a robot leaning that much reports."""
    near, inits = _near_tilt(tilt)
    nodes = [helper.make_node("Cast", ["near"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Neg", ["nf"], ["neg"]), helper.make_node("Sqrt", ["neg"], ["root"]),
             helper.make_node("Add", ["m", "root"], ["y"])]
    return _policy(path, near + nodes, inits, "y")


def _near_tilt(tilt: float) -> tuple[list, list]:
    """Nodes computing ``near`` (bool, (batch, 1)): theta within 0.01 of ``tilt``."""
    nodes = [helper.make_node("Slice", ["obs", "s0", "s1", "ax"], ["theta"]),
             helper.make_node("Sub", ["theta", "tilt"], ["d"]), helper.make_node("Abs", ["d"], ["a"]),
             helper.make_node("Less", ["a", "eps"], ["near"])]
    inits = [_scalar("s0", [0], np.int64), _scalar("s1", [1], np.int64), _scalar("ax", [1], np.int64),
             _scalar("tilt", [tilt]), _scalar("eps", [0.01])]
    return nodes, inits


def _loop(trips: str, result: str) -> tuple[list, list]:
    """A Loop of ``trips`` (a tensor name; '' for no limit) iterations that passes m through."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    loop = helper.make_node("Loop", [trips, "cond", "m"], [result], body=body)
    return [loop], [_scalar("cond", True, np.bool_)]


def looped(path: Path, trips: int | None) -> Path:
    """A Loop around the action: ``trips`` iterations, or (None) one that never ends."""
    nodes, inits = _loop("trips" if trips is not None else "", "y")
    if trips is not None:
        inits.append(_scalar("trips", trips, np.int64))
    return _policy(path, nodes, inits, "y")


def slow_near_tilt(path: Path, tilt: float, trips: int = 200_000) -> Path:
    """``trips`` Loop iterations (about 80 ms) only when theta is within 0.01 of ``tilt``, none
    otherwise: fast on the vetting batch, slow on the robot."""
    near, inits = _near_tilt(tilt)
    count = [helper.make_node("Cast", ["near"], ["near_int"], to=TensorProto.INT64),
             helper.make_node("ReduceMax", ["near_int"], ["any_near"], keepdims=0),
             helper.make_node("Mul", ["any_near", "many"], ["trips"])]
    loop, loop_inits = _loop("trips", "y")
    return _policy(path, near + count + loop, inits + loop_inits + [_scalar("many", trips, np.int64)], "y")


def external_data(path: Path) -> Path:
    """W kept in a side file (ONNX external data): the node must load one self-contained file."""
    linear(path)
    model = load_model(str(path))
    convert_model_to_external_data(model, location=f"{path.stem}.data",
                                   size_threshold=0)
    save_model(model, str(path))
    return path


def memory_bomb(path: Path, floats: int = 2**28) -> Path:
    """Tiles the observation to ``floats`` values (1 GiB) at every inference: a small file that
    only shows its appetite when it runs (no constant folding: it depends on the input)."""
    nodes = [helper.make_node("Tile", ["obs", "repeats"], ["tiled"]),
             helper.make_node("ReduceSum", ["tiled"], ["total"], keepdims=0),
             helper.make_node("Mul", ["total", "zero"], ["nothing"]),
             helper.make_node("Add", ["m", "nothing"], ["y"])]
    inits = [_scalar("repeats", [floats // SPEC.obs_dim, 1], np.int64), _scalar("zero", 0.0)]
    return _policy(path, nodes, inits, "y")


def padded(path: Path, size: int) -> Path:
    """The linear policy plus a zero initializer, one element of which is added to the action: a
    file of about ``size`` bytes that ONNX Runtime must really read."""
    pad = numpy_helper.from_array(np.zeros(max(size - 2048, 4) // 4, np.float32), "pad")
    nodes = [helper.make_node("Gather", ["pad", "first"], ["padded"]),
             helper.make_node("Add", ["m", "padded"], ["y"])]
    return _policy(path, nodes, [pad, _scalar("first", [0], np.int64)], "y")


class Client:
    """Sensors out, commands and swap outcomes in (imports rclpy only when measuring)."""

    def __init__(self, domain: int):
        from sensor_msgs.msg import Imu, JointState
        from std_msgs.msg import Float64MultiArray, Header, String

        from droil_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
        from droil_ros.nodes.graph import GraphClient

        client = self

        class Graph(GraphClient):
            def setup(self):
                node = self.node
                self.joint_pub = node.create_publisher(JointState, "joint_states", SENSOR_QOS)
                self.imu_pub = node.create_publisher(Imu, "imu/data", SENSOR_QOS)
                node.create_subscription(Float64MultiArray, "effort_controller/commands", self.on_command,
                                         COMMAND_QOS)
                node.create_subscription(String, "/policy/swap_status", self.on_swap, LATCHED_QOS)
                node.create_timer(0.01, self.publish)

            def on_command(self, msg, info):
                client.sent.append(info["source_timestamp"] * 1e-9)

            def on_swap(self, msg):
                client.outcomes.append((time.time(), json.loads(msg.data)))

            def publish(self):
                stamp = self.node.get_clock().now().to_msg()
                joints = list(SPEC.joints)
                zeros = [0.0] * len(joints)
                self.joint_pub.publish(JointState(header=Header(stamp=stamp), name=joints, position=zeros,
                                                  velocity=zeros, effort=zeros))
                imu = Imu(header=Header(stamp=stamp, frame_id=SPEC.imu["frame_id"]))
                imu.orientation.y, imu.orientation.w = math.sin(TILT / 2), math.cos(TILT / 2)
                self.imu_pub.publish(imu)

        self.sent: list[float] = []
        self.outcomes: list[tuple[float, dict]] = []
        self.graph = Graph(domain, "swap_attacker")

    def longest_gap_ms(self, start: float, end: float) -> tuple[float, int]:
        times = np.array([t for t in list(self.sent) if start <= t <= end])
        return (float(np.diff(times).max() * 1e3) if len(times) > 1 else math.inf), len(times)

    def swap(self, path: Path, timeout: float = 60.0) -> tuple[float, float, dict]:
        """Ask for ``path``; (asked, outcome time, outcome), times on the system clock."""
        seen = len(self.outcomes)
        asked = time.time()
        ok, reason = self.graph.set_parameter("policy", "policy_path", str(path))
        if not ok:
            return asked, time.time(), {"ok": False, "reason": reason}
        if not self.graph.wait_for(lambda: len(self.outcomes) > seen, timeout):
            raise RuntimeError(f"no swap outcome for {path} within {timeout:g} s")
        return asked, *self.outcomes[seen]


def make_files(directory: Path, near_bytes: int, over_bytes: int) -> dict[str, Path]:
    huge = directory / "huge.onnx"
    with open(huge, "wb") as f:
        f.truncate(2**30)  # sparse: no disk
    return {"baseline": linear(directory / "good.onnx"), "1 GiB (sparse)": huge,
            f"{near_bytes / 2**20:.2f} MiB": padded(directory / "big.onnx", near_bytes),
            f"{over_bytes / 2**20:.2f} MiB": padded(directory / "bigger.onnx", over_bytes),
            "hanging (Loop without end)": looped(directory / "hang.onnx", None),
            "slow (Loop of 200k)": looped(directory / "slow.onnx", 200_000)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--near-bytes", type=int, default=2**20,
                        help="a policy this big: its session builds within a 200 Hz period here")
    parser.add_argument("--over-bytes", type=int, default=int(1.9 * 2**20),
                        help="one this big: under max_policy_bytes, but its build takes over a period")
    parser.add_argument("--vet-timeout", type=float, default=10.0)
    parser.add_argument("--baseline", type=float, default=10.0, help="s without a swap, first")
    parser.add_argument("--thread-priority", type=int, default=0,
                        help="the node's thread_priority (its loop's SCHED_FIFO; robot.yaml: 50)")
    args = parser.parse_args(argv)
    domain = random.randint(102, 110)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.near_bytes, args.over_bytes)
        params = {"policy_path": files["baseline"], "policy_dir": tmp, "autostart": "true",
                  "vet_timeout": args.vet_timeout, "thread_priority": args.thread_priority}
        command = [sys.executable, "-m", "droil_ros.nodes.policy", "--ros-args",
                   *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]]
        log = open(Path(tmp) / "policy.log", "w")
        node = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        client = Client(domain)
        try:
            if not client.graph.wait_for(lambda: len(client.sent) > 400, 60.0):
                raise RuntimeError("the policy node did not start commanding")
            quiet = time.time()
            time.sleep(args.baseline)
            gap, n = client.longest_gap_ms(quiet, quiet + args.baseline)
            rows = [{"case": "baseline (no swap)", "ok": None, "reason": "", "window_s": args.baseline,
                     "commands": n, "longest_gap_ms": round(gap, 2)}]
            for name, path in list(files.items())[1:]:
                asked, done, outcome = client.swap(path)
                time.sleep(0.5)
                gap, n = client.longest_gap_ms(asked, done + 0.2)
                rows.append({"case": name, "ok": outcome["ok"], "reason": outcome.get("reason", ""),
                             "window_s": round(done + 0.2 - asked, 2), "commands": n,
                             "longest_gap_ms": round(gap, 2)})
                if outcome["ok"]:  # back to the small policy
                    client.swap(files["baseline"])
                    time.sleep(0.5)
        finally:
            client.graph.close()
            node.terminate()
            node.wait(timeout=10)
            log.close()
    print(f"{'case':32} {'outcome':9} {'window s':>9} {'commands':>9} {'longest gap ms':>15}")
    for r in rows:
        outcome = "" if r["ok"] is None else ("accepted" if r["ok"] else "rejected")
        print(f"{r['case']:32} {outcome:9} {r['window_s']:9.2f} {r['commands']:9d} "
              f"{r['longest_gap_ms']:15.2f}" + (f"  ({r['reason'][:90]})" if r["reason"] else ""))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
