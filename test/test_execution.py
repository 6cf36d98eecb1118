"""The execution layer: an evaluation and a training unit give the same numbers serially, on
local processes and on a two-node Ray cluster started here (ray.cluster_utils, real raylets);
a worker node killed while it runs a job, Ray runs the job again on the head and the result
is unchanged."""

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from droil_ros.bench.robustness import train_unit
from droil_ros.data.collect import collect
from droil_ros.data.dataset import load_dataset
from droil_ros.eval.grid import evaluate, load_grid
from droil_ros.execution import executor
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots import load_spec
from droil_ros.sim.lqr import LQRController

HERE = Path(__file__).parent
GRID = """\
robot: wheel_legged
task: stand
episodes: 3
seconds: 4
perturbations:
  mass: {x: [1.0, 1.5, 2.0, 2.5], perturb: "mass={x}"}
  friction: {x: [1.0, 0.7, 0.5, 0.3], perturb: "friction={x}"}
"""
SPEC = load_spec("wheel_legged")


class RecordingLQR(LQRController):
    """The LQR, writing the Ray node of each episode it starts to a file (this test's evidence
    of where jobs ran, and that a job ran twice); on node ``hold`` it then waits to be killed,
    so that the node dies in the middle of a job however fast or slow the machine is."""

    def __init__(self, spec, log: Path, hold: str | None = None):
        super().__init__(spec)
        self.log, self.hold = log, hold

    def reset(self):
        super().reset()
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "driver"
        with open(self.log, "a") as handle:
            handle.write(node + "\n")
        while node == self.hold:
            time.sleep(1.0)

    def __reduce__(self):
        return (RecordingLQR, (self.robot, self.log, self.hold))


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node of one CPU each; workers import this module (PYTHONPATH)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), before]))
    nodes = None
    try:
        try:  # the raylets keep the environment they start with
            nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
            worker = nodes.add_node(num_cpus=1)
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before
        ray.init(address=nodes.address, log_to_driver=False, configure_logging=False)
        yield nodes, worker
    finally:
        ray.shutdown()
        if nodes is not None:
            nodes.shutdown()


def test_an_evaluation_gives_the_same_returns_anywhere_and_survives_a_lost_node(cluster, tmp_path):
    nodes, worker = cluster
    grid_path = tmp_path / "grid.yaml"
    grid_path.write_text(GRID)
    grid = load_grid(grid_path)
    jobs, episodes = 8, 3
    logs = {where: tmp_path / f"{where}.log" for where in ("serial", "local", "ray")}
    results = {where: evaluate({"lqr": RecordingLQR(SPEC, logs[where])}, grid, seed=5, progress=False,
                               workers=2 if where == "local" else 1)
               for where in ("serial", "local")}
    assert results["local"]["results"] == results["serial"]["results"]

    done = threading.Event()

    def kill_once_it_runs_a_job():  # the worker node dies in the middle of a job of its own
        while not done.wait(0.05):
            if logs["ray"].is_file() and worker.node_id in logs["ray"].read_text():
                nodes.remove_node(worker, allow_graceful=False)
                return

    killer = threading.Thread(target=kill_once_it_runs_a_job, daemon=True)
    killer.start()
    try:
        results["ray"] = evaluate({"lqr": RecordingLQR(SPEC, logs["ray"], hold=worker.node_id)}, grid,
                                  seed=5, progress=False, workers=executor(ray=nodes.address))
    finally:
        done.set()
        killer.join()
    assert results["ray"]["results"] == results["serial"]["results"]
    started = logs["ray"].read_text().split()
    assert worker.node_id in started  # the worker node ran a job, and died in it:
    assert worker not in nodes.list_all_nodes() and len(started) > jobs * episodes  # a job ran again


def test_a_training_unit_gives_the_same_policy_anywhere(cluster, tmp_path):
    nodes, _ = cluster
    data = tmp_path / "data.npz"
    collect("wheel_legged", "lqr", seed=0, episodes=2, seconds=1.0).save(data)
    settings = {"steps": 200, "n_seeds": 2, "seed": 0, "select": None, "progress": False, "threads": 1,
                "overrides": {}}
    outputs = {}
    runners = {"serial": executor(), "local": executor(2), "ray": executor(ray=nodes.address)}
    for where, runner in runners.items():
        work = tmp_path / where
        with runner:
            (result,) = runner.map(train_unit, [("bc", settings)], (data, work, SPEC))
        observations = load_dataset(data).observations[:50]
        outputs[where] = [OnnxPolicy(path, SPEC)(observations) for path in result["policies"]]
        outputs[where + " loss"] = {k: v for k, v in result["final"].items() if k != "seconds"}
    for where in ("local", "ray"):
        assert outputs[where + " loss"] == outputs["serial loss"]
        for ours, serial in zip(outputs[where], outputs["serial"], strict=True):
            np.testing.assert_array_equal(ours, serial)  # bit for bit
