"""Trainer node: learns a policy from a dataset or a bag in a worker thread, publishes progress,
exports ONNX and announces the new file on ``/droil/policy_updates`` as JSON ``{"path", "sha256"}``
(a policy node with ``auto_swap`` then hot-swaps to it, and only to a file with that hash).

``~/train`` (std_srvs/Trigger) starts a run with the current parameters and answers at once; a
second request while one runs is refused. Progress goes to ``~/progress`` (std_msgs/String,
JSON: state, step, loss, ...), the outcome too: ``done`` with the policy paths, or ``failed``
with the reason (a bad dataset is reported, the node keeps running).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path

from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from droil_ros.errors import DroilError
from droil_ros.nodes.common import LATCHED_QOS, declare_robot, describe, spin_node

UPDATES_TOPIC = "/droil/policy_updates"


class TrainerNode(Node):
    def __init__(self):
        super().__init__("trainer")
        self.spec = declare_robot(self)
        for name, default, text in (
            ("data", "", "dataset file (.npz) or rosbag2 (directory or .mcap) to learn from"),
            ("task", "", "task for a bag's rewards and falls (default: the robot's first)"),
            ("algo", "bc", "learner: bc | drbc | be_droil | be_droil_nu0"),
            ("preset", "paper", "learner config preset: fast | paper"),
            ("steps", 0, "gradient steps (0: the preset's)"),
            ("seeds", 1, "seeds trained as one batch; the first is announced"),
            ("output_dir", "./policies", "where policies and their CSV logs are written"),
        ):
            self.declare_parameter(name, default, describe(text))
        self.progress_pub = self.create_publisher(String, "~/progress", LATCHED_QOS)
        self.updates_pub = self.create_publisher(String, UPDATES_TOPIC, 10)
        self.create_service(Trigger, "~/train", self._on_train)
        self.worker: threading.Thread | None = None
        self._publish({"state": "idle"})

    def _publish(self, payload: dict) -> None:
        self.progress_pub.publish(String(data=json.dumps(payload)))

    def _on_train(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.worker is not None and self.worker.is_alive():
            response.success, response.message = False, "a training run is in progress"
            return response
        params = {n: self.get_parameter(n).value
                  for n in ("data", "task", "algo", "preset", "steps", "seeds", "output_dir")}
        if not params["data"]:
            response.success, response.message = False, "set the 'data' parameter first"
            return response
        out = Path(params["output_dir"]) / f"{params['algo']}_{time.strftime('%Y%m%d_%H%M%S')}.onnx"
        self.worker = threading.Thread(target=self._run, args=(params, out), daemon=True)
        self.worker.start()
        response.success, response.message = True, f"training {params['algo']} -> {out}"
        return response

    def _run(self, params: dict, out: Path) -> None:
        """Worker thread: only publishes, which rclpy allows from any thread."""
        from droil_ros.data.dataset import load_dataset
        from droil_ros.pipeline import train_and_export

        try:
            data = Path(params["data"])
            if data.suffix == ".npz":
                dataset = load_dataset(data, self.spec)
            else:
                from droil_ros.data.bag import dataset_from_bag

                dataset = dataset_from_bag(data, self.spec, task=params["task"] or None)
            self._publish({"state": "training", "step": 0, "dataset": len(dataset)})
            result = train_and_export(
                params["algo"], dataset, out, robot=self.spec, steps=params["steps"] or None,
                n_seeds=params["seeds"], preset=params["preset"], progress=False,
                callback=lambda row: self._publish({"state": "training", **row}))
            digest = hashlib.sha256(result.policies[0].read_bytes()).hexdigest()  # pins what is announced
        except (DroilError, OSError, ValueError) as exc:
            self.get_logger().error(f"training failed: {exc}")
            self._publish({"state": "failed", "reason": str(exc)})
            return
        paths = [str(p) for p in result.policies]
        self._publish({"state": "done", "policies": paths, "steps": result.steps,
                       "seconds": round(result.seconds, 2), **result.final})
        self.updates_pub.publish(String(data=json.dumps({"path": paths[0], "sha256": digest})))
        self.get_logger().info(f"exported {', '.join(paths)}; announced {paths[0]}")


def main(args: list[str] | None = None) -> int:
    return spin_node(TrainerNode, args)


if __name__ == "__main__":
    sys.exit(main())
