"""``droil demo``: demonstrations -> robust policies -> hot-swapped deployment, end to end.

1. **Record.** sim_bridge (lockstep: each state waits for the command answering it), the LQR
   expert and the demo recorder run as ROS nodes; episodes from random initial tilts (a
   ``~/reset`` every ``episode_seconds`` of sim time) go into a rosbag2 (MCAP).
2. **Dataset.** ``dataset_from_bag`` through the robot spec, as ``droil dataset from-bag``
   does, without the warm-up episode (see ``record``).
3. **Train.** Each learner (the paper preset's networks, 3000 steps, seeds batched), exported
   to ONNX.
4. **Deploy.** sim_bridge in real time on a *perturbed* robot. The LQR node balances it first
   (the reference); then the policy node takes over and each learner's policy (seed 0) is
   hot-swapped in through the ``policy_path`` parameter while the robot runs. Every controller
   gets the same initial tilts; the client measures each episode from the JointState/Imu stream
   (through the spec) and the commands (zero-order hold, as the simulator applies them).
5. **Report.** A table (falls, return, mean |tilt|, speed error, swap time), ``results.json``,
   ``results.md`` and ``results.png`` in the run folder, beside the bag, dataset, ONNX files,
   training logs and node logs.

Nodes run as processes in sessions of their own, stopped (SIGTERM, then SIGKILL) whatever ends
the run: Ctrl-C, SIGTERM or an error leaves no node behind.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from lifecycle_msgs.srv import GetState
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tqdm import tqdm

from droil_ros.bringup import BringupNode, NodeGroup
from droil_ros.errors import DroilError
from droil_ros.nodes.common import (
    CLOCK_QOS,
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_WITNESS_QOS,
    readings_from_msgs,
)
from droil_ros.nodes.graph import GraphClient
from droil_ros.nodes.interface import RobotInterface
from droil_ros.robots.spec import RobotSpec, load_spec, task_rewards

LIFECYCLE_ACTIVE = 3  # lifecycle_msgs/State.PRIMARY_STATE_ACTIVE
STARTUP_TIMEOUT = 60.0  # s for nodes to come up on a loaded machine


@dataclass
class DemoConfig:
    robot: str = "wheel_legged"
    task: str = "stand"
    record_seconds: float = 50.0  # of demonstrations (sim time), at the robot's control rate
    episode_seconds: float = 5.0  # per recorded episode, each from a random initial tilt
    learners: tuple[str, ...] = ("bc", "drbc", "be_droil")
    steps: int = 3000  # training steps of the paper preset's networks (10k in the benchmarks)
    seeds: int = 3  # trained as one batch; seed 0 is deployed
    perturb: str = "payload=1.5,friction=0.4,gear=0.6"  # heavier body, slippery floor, weak motors
    eval_episodes: int = 4  # per controller
    eval_seconds: float = 10.0
    seed: int = 0
    out: Path = field(default_factory=lambda: Path("runs") / time.strftime("demo_%Y%m%d_%H%M%S"))


@dataclass
class EpisodeResult:
    tilt0: float
    fell: bool
    seconds: float
    ret: float
    mean_abs_tilt: float
    speed_rms_error: float
    states: int


class DemoClient(GraphClient):
    """Calls the nodes' services and parameters; turns the sensor stream into observations and
    keeps them, with the command acting at each, while an episode is measured."""

    def __init__(self, spec: RobotSpec, task: str):
        self.spec, self.task = spec, spec.task(task)
        self.sim_time = -1.0
        self.action = np.zeros(len(spec.action_names))
        self.pending: dict[str, dict] = {"js": {}, "imu": {}}  # by stamp, until both arrive
        self.samples: list[tuple[float, np.ndarray, np.ndarray]] | None = None  # while measuring
        self.swaps: list[tuple[float, dict]] = []
        super().__init__(name="droil_demo")

    def setup(self) -> None:
        node, ros = self.node, self.spec.ros
        self.command = RobotInterface(self.spec).command
        node.create_subscription(ClockMsg, "/clock", self._on_clock, CLOCK_QOS)
        # every state counts in a measured episode, also when this process lags; the spec's
        # topics as written (the demo's nodes and this client are at the root namespace)
        node.create_subscription(JointState, ros.state_topic, lambda m: self._on_sensor("js", m),
                                 SENSOR_WITNESS_QOS)
        node.create_subscription(Imu, ros.imu_topic, lambda m: self._on_sensor("imu", m), SENSOR_WITNESS_QOS)
        node.create_subscription(self.command.msg_type, ros.command_topic, self._on_command, COMMAND_QOS)
        node.create_subscription(String, "/policy/swap_status", self._on_swap, LATCHED_QOS)
        for service in ("/sim_bridge/reset", "/demo_recorder/start", "/demo_recorder/stop"):
            self.client(Trigger, service)  # before the nodes start: their first answer reaches us
        self.client(GetState, "/policy/get_state")

    def _on_clock(self, msg: ClockMsg) -> None:
        self.sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _on_command(self, msg) -> None:
        try:
            command = self.command.decode(msg)
        except ValueError:
            return
        with self.lock:
            self.action = self.spec.command_to_action(command)

    def _on_swap(self, msg: String) -> None:
        with self.lock:
            self.swaps.append((time.monotonic(), json.loads(msg.data)))

    def _on_sensor(self, kind: str, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        other = "imu" if kind == "js" else "js"
        with self.lock:
            mate = self.pending[other].pop(stamp, None)
            if mate is None:
                self.pending[kind][stamp] = msg
                for old in [s for s in self.pending[kind] if s < stamp - 0.5]:
                    del self.pending[kind][old]
                return
            if self.samples is None:
                return
            js, imu = (msg, mate) if kind == "js" else (mate, msg)
            obs = self.spec.build_observation(readings_from_msgs(js, imu))
            self.samples.append((stamp, obs, self.action.copy()))

    # -- graph

    def wait_for_sim(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until the /clock of a sim_bridge just started runs (it steps once a controller
        commands it; each sim_bridge's clock starts at 0)."""
        self.sim_time = -1.0
        if not self.wait_for(lambda: self.sim_time > 0.0, timeout):
            raise DroilError(f"the simulation did not start within {timeout:g} s (see the node logs)")

    def wait_for_subscribers(self, topic: str, nodes: set[str], timeout: float = STARTUP_TIMEOUT) -> None:
        def subscribed() -> bool:
            return nodes <= {info.node_name for info in self.node.get_subscriptions_info_by_topic(topic)}

        if not self.wait_for(subscribed, timeout):
            raise DroilError(f"{', '.join(sorted(nodes))} not all subscribed to {topic} after {timeout:g} s")

    def wait_active(self, node_name: str, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # asking again is safe: an answer lost while the node was discovered is not fatal
                state = self.call(GetState, f"/{node_name}/get_state", GetState.Request(), 5.0)
            except DroilError:
                continue
            if state.current_state.id == LIFECYCLE_ACTIVE:
                return
            time.sleep(0.1)
        raise DroilError(f"{node_name} is not active after {timeout:g} s")

    def trigger(self, service: str) -> str:
        response = self.call(Trigger, service, Trigger.Request())
        if not response.success:
            raise DroilError(f"{service}: {response.message}")
        return response.message

    def swap(self, path: Path, timeout: float = 30.0) -> float:
        """Hot-swap the policy node to ``path``; seconds from the request to the new policy acting."""
        asked = time.monotonic()
        ok, reason = self.set_parameter("policy", "policy_path", str(path))
        if not ok:
            raise DroilError(f"policy node refused {path}: {reason}")

        def outcome():
            with self.lock:
                return next((s for t, s in self.swaps if t >= asked and s["path"] == str(path)), None)

        if not self.wait_for(outcome, timeout):
            raise DroilError(f"no swap status for {path} within {timeout:g} s")
        status = outcome()
        if not status["ok"]:
            raise DroilError(f"policy node rejected {path}: {status['reason']}")
        return next(t for t, s in self.swaps if s is status) - asked

    # -- episodes

    def episode(self, tilt0: float, seconds: float) -> EpisodeResult:
        """Reset the sim to ``tilt0`` and measure one episode of ``seconds`` of sim time (or
        until the tilt passes the task's fall tilt)."""
        ok, reason = self.set_parameter("sim_bridge", "initial_tilt", float(tilt0))
        if not ok:
            raise DroilError(f"sim_bridge refused initial_tilt: {reason}")
        self.trigger("/sim_bridge/reset")
        time.sleep(0.02)  # states stamped before the reset may still be in flight
        with self.lock:
            self.samples = []
        theta = self.spec.obs_names.index("theta")

        def done() -> bool:
            with self.lock:
                samples = self.samples
                return bool(samples) and (samples[-1][0] - samples[0][0] >= seconds - 1e-9
                                          or abs(samples[-1][1][theta]) > self.task.fall_tilt)

        if not self.wait_for(done, 10.0 + 5.0 * seconds):
            raise DroilError("the simulation stopped publishing states (see the node logs)")
        with self.lock:
            samples, self.samples = self.samples, None
        return measure(self.spec, self.task, tilt0, samples)


def measure(spec: RobotSpec, task, tilt0: float, samples: list) -> EpisodeResult:
    """Episode metrics from (stamp, observation, acting action) samples, up to the first fall;
    rewards as in the datasets: on each s' (every sample but the first) and its action."""
    names = spec.obs_names
    times = np.array([s[0] for s in samples])
    obs = np.array([s[1] for s in samples])
    actions = np.array([s[2] for s in samples])
    theta, x_dot = obs[:, names.index("theta")], obs[:, names.index("x_dot")]
    falls = np.flatnonzero(np.abs(theta) > task.fall_tilt)
    end = int(falls[0]) + 1 if len(falls) else len(samples)
    rewards = task_rewards(spec, task, obs[1:end], actions[1:end], times[1:end] - times[0])
    return EpisodeResult(
        tilt0=float(tilt0), fell=bool(len(falls)), seconds=float(times[end - 1] - times[0]),
        ret=float(np.sum(rewards)), mean_abs_tilt=float(np.mean(np.abs(theta[:end]))),
        speed_rms_error=float(np.sqrt(np.mean((x_dot[:end] - task.v_ref) ** 2))), states=end)


# -- stages


def node(executable: str, **parameters) -> BringupNode:
    return BringupNode(executable, parameters)


def record(cfg: DemoConfig, spec: RobotSpec, client: DemoClient, group: NodeGroup, run: Path) -> Path:
    """Stage 1: LQR demonstrations in lockstep into a bag; returns the bag's path.

    The bag's first episode is a warm-up: it runs until the recorder has heard every topic
    (DDS discovery takes seconds on a loaded machine, and lockstep runs as soon as the LQR
    answers), then a reset starts the first demonstration; ``dataset`` drops the warm-up."""
    group.start(node("demo_recorder", robot=spec.id, output_dir=str(run / "bags"), flush_period=0.5))
    group.start(node("lqr_expert", robot=spec.id, task=cfg.task, use_sim_time=True))
    from droil_ros.data.bag import bag_topic

    ros = spec.ros
    recorded = [bag_topic(topic) for topic in (ros.state_topic, ros.imu_topic, ros.command_topic)]
    client.wait_for_subscribers(recorded[0], {"demo_recorder", "lqr_expert"})
    bag = Path(client.trigger("/demo_recorder/start").removeprefix("recording to "))
    group.start(node("sim_bridge", robot=spec.id, task=cfg.task, mode="lockstep", seed=cfg.seed))
    if not client.wait_for(lambda: all(bag_counts(bag).get(t, 0) > 0 for t in recorded), STARTUP_TIMEOUT):
        raise DroilError(f"the recorder heard only {sorted(bag_counts(bag))} within {STARTUP_TIMEOUT:g} s "
                         f"(see the node logs)")
    client.trigger("/sim_bridge/reset")
    start = client.sim_time
    episodes = max(1, math.ceil(cfg.record_seconds / cfg.episode_seconds - 1e-9))
    with tqdm(total=round(episodes * cfg.episode_seconds, 2), desc="record (sim s)", unit="s",
              bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]") as bar:
        for k in range(episodes):
            end = start + (k + 1) * cfg.episode_seconds
            while client.sim_time < end:
                group.check(during="the recording")
                bar.update(min(client.sim_time - start, bar.total) - bar.n)
                time.sleep(0.05)
            if k + 1 < episodes:
                client.trigger("/sim_bridge/reset")
        bar.update(bar.total - bar.n)
    ok, reason = client.set_parameter("sim_bridge", "paused", True)
    if not ok:
        raise DroilError(f"sim_bridge refused to pause: {reason}")
    drain(bag)  # the recorder catches up before the nodes, and what they still send, go away
    client.trigger("/demo_recorder/stop")
    group.stop()
    return bag


def bag_counts(bag: Path) -> dict[str, int]:
    """Messages per topic as of the recorder's last flush (its ``metadata.yaml``)."""
    import yaml

    try:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: int(t["message_count"])
                for t in info["topics_with_message_count"]}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return {}


def drain(bag: Path, period: float = 1.0, timeout: float = 60.0) -> None:
    """Until the recorder has written what it still had queued: its flushed message counts
    (rewritten every 0.5 s) stay put for two seconds."""
    deadline, history = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        history = [*history[-2:], bag_counts(bag)]
        if len(history) == 3 and history[0] == history[1] == history[2]:
            return
        time.sleep(period)


def dataset(bag: Path, spec: RobotSpec, task: str):
    """Stage 2: the bag's transitions without the warm-up episode."""
    from droil_ros.data.bag import dataset_from_bag

    data = dataset_from_bag(bag, spec, task)
    episode = np.cumsum(data.episode_starts)
    return data.select(episode >= 2, f"{data.meta.get('source', '')}; warm-up episode dropped")


def deploy(cfg: DemoConfig, spec: RobotSpec, client: DemoClient, group: NodeGroup,
           policies: dict[str, Path]) -> dict[str, dict]:
    """Stage 4: the LQR, then each policy hot-swapped in, on the perturbed robot in real time."""
    group.start(node("sim_bridge", robot=spec.id, task=cfg.task, mode="realtime", seed=cfg.seed + 1,
                     perturbation=cfg.perturb))
    group.start(node("lqr_expert", robot=spec.id, task=cfg.task))
    client.wait_for_sim()
    rng = np.random.default_rng(cfg.seed + 1)
    init = spec.task(cfg.task).init_tilt
    tilts = rng.uniform(-init, init, cfg.eval_episodes)
    results: dict[str, dict] = {}
    controllers = ["lqr", *policies]
    with tqdm(total=len(controllers) * cfg.eval_episodes, desc="deploy (episodes)") as bar:
        for name in controllers:
            swap_seconds = None
            if name != "lqr":
                if "lqr_expert" in group.procs:  # the policy node takes over from the LQR
                    group.stop("lqr_expert")
                    group.start(node("policy", robot=spec.id, autostart=True,  # loads only from there
                                     policy_dir=str(Path(policies[name]).parent)))
                    client.wait_active("policy")
                swap_seconds = client.swap(policies[name])
            episodes = []
            for tilt0 in tilts:
                bar.set_postfix_str(name)
                episodes.append(client.episode(tilt0, cfg.eval_seconds))
                bar.update()
                group.check(during="deployment")
            results[name] = summarise(episodes, swap_seconds)
    group.stop()
    return results


def summarise(episodes: list[EpisodeResult], swap_seconds: float | None) -> dict:
    returns = np.array([e.ret for e in episodes])
    return {
        "episodes": len(episodes), "falls": int(sum(e.fell for e in episodes)),
        "return": float(returns.mean()), "return_std": float(returns.std()),
        "mean_abs_tilt": float(np.mean([e.mean_abs_tilt for e in episodes])),
        "speed_rms_error": float(np.mean([e.speed_rms_error for e in episodes])),
        "swap_ms": None if swap_seconds is None else 1e3 * swap_seconds,
        "per_episode": [asdict(e) for e in episodes],
    }


def table(results: dict[str, dict], cfg: DemoConfig) -> str:
    rows = [f"Deployment on the perturbed robot ({cfg.perturb}), {cfg.eval_episodes} episodes x "
            f"{cfg.eval_seconds:g} s per controller, same initial tilts; return max "
            f"{cfg.eval_seconds * load_spec(cfg.robot).control_rate_hz:.0f}.", "",
            "| controller | falls | return (mean ± std) | mean abs tilt (rad) | speed RMS error (m/s) "
            "| hot-swap (ms) |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        swap = "—" if r["swap_ms"] is None else f"{r['swap_ms']:.0f}"
        rows.append(f"| {name} | {r['falls']}/{r['episodes']} | {r['return']:.1f} ± {r['return_std']:.1f} "
                    f"| {r['mean_abs_tilt']:.4f} | {r['speed_rms_error']:.4f} | {swap} |")
    return "\n".join(rows)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ret, ax_tilt) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(results)
    for i, name in enumerate(names):
        per = results[name]["per_episode"]
        ax_ret.scatter([i] * len(per), [e["ret"] for e in per], color=f"C{i}", alpha=0.6)
        ax_tilt.scatter([i] * len(per), [e["mean_abs_tilt"] for e in per], color=f"C{i}", alpha=0.6)
    ax_ret.bar(range(len(names)), [results[n]["return"] for n in names], alpha=0.3,
               color=[f"C{i}" for i in range(len(names))])
    ax_tilt.bar(range(len(names)), [results[n]["mean_abs_tilt"] for n in names], alpha=0.3,
                color=[f"C{i}" for i in range(len(names))])
    for ax, label in ((ax_ret, "episode return"), (ax_tilt, "mean |tilt| (rad)")):
        ax.set_xticks(range(len(names)), [f"{n}\n{results[n]['falls']} falls" for n in names])
        ax.set_ylabel(label)
    fig.suptitle("droil demo: deployment on the perturbed robot (bars: mean; dots: episodes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(cfg: DemoConfig, log=print) -> dict:
    """The whole demo; returns what ``results.json`` holds."""
    from droil_ros.pipeline import train_and_export
    from droil_ros.sim.perturb import parse_perturbation

    spec = load_spec(cfg.robot)
    if not spec.uses_sensor_observation:
        raise DroilError(f"the demo runs robots observed through JointState + Imu; '{spec.id}' is not")
    spec.task(cfg.task)
    parse_perturbation(cfg.perturb)  # a typo fails now, not after training
    from droil_ros import algos

    for name in cfg.learners:
        algos.make_config(name, "paper")
    run_dir = cfg.out.resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DroilError(f"{run_dir} exists and is not empty; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    started = time.monotonic()
    timings = {}
    log(f"droil demo: run folder {run_dir}")
    client = DemoClient(spec, cfg.task)
    try:
        with NodeGroup(run_dir / "logs") as group:
            t = time.monotonic()
            bag = record(cfg, spec, client, group, run_dir)
            timings["record"] = time.monotonic() - t
        data = dataset(bag, spec, cfg.task)
        dataset_path = data.save(run_dir / "dataset.npz")
        log(f"dataset: {len(data)} transitions, {data.n_episodes} episodes from {bag.name} "
            f"({data.meta.get('source', '')})")
        t = time.monotonic()
        policies, training = {}, {}
        for name in cfg.learners:
            result = train_and_export(name, data, run_dir / "policies" / f"{name}.onnx", spec,
                                      steps=cfg.steps, n_seeds=cfg.seeds, seed=cfg.seed, preset="paper")
            policies[name] = result.policies[0]
            training[name] = {"seconds": result.seconds, "steps": result.steps,
                              "policies": [str(p) for p in result.policies], "log": str(result.log)}
        timings["train"] = time.monotonic() - t
        with NodeGroup(run_dir / "logs") as group:
            t = time.monotonic()
            results = deploy(cfg, spec, client, group, policies)
            timings["deploy"] = time.monotonic() - t
    finally:
        client.close(leaving=True)  # the CLI ends the process (droil_ros.nodes.graph.exit_process)
    timings["total"] = time.monotonic() - started
    text = table(results, cfg)
    summary = {"config": {**asdict(cfg), "out": str(cfg.out)}, "bag": str(bag),
               "dataset": str(dataset_path), "dataset_transitions": len(data),
               "dataset_episodes": data.n_episodes, "training": training, "results": results,
               "seconds": timings}
    (run_dir / "results.json").write_text(json.dumps(summary, indent=1))
    (run_dir / "results.md").write_text(text + "\n")
    plot(results, run_dir / "results.png")
    log("\n" + text + "\n")
    log(f"wall time {timings['total']:.0f} s (record {timings['record']:.0f}, train {timings['train']:.0f}, "
        f"deploy {timings['deploy']:.0f})")
    log(f"bag: {bag}\ndataset: {dataset_path}\npolicies: {run_dir / 'policies'}\n"
        f"node logs: {run_dir / 'logs'}\nresults: {run_dir / 'results.md'}, results.json, results.png")
    return summary
