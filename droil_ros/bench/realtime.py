"""``droil bench realtime``: serving cost of a learned policy (BENCHMARKS.md §4).

1. Inference: one trained policy (the learners' 256-256 MLP), one observation per call, ONNX
   Runtime (1 thread, as the policy node) against torch eager (1 thread, no_grad) in the same
   process, in alternating blocks so that the load of a shared machine hits both alike.
2. Closed loop across processes: the real policy node (its own process, ``autostart``) at
   200, 500 and 1000 Hz; a probe in this process publishes JointState + Imu at the node's rate and
   subscribes to the commands. The states are distinct (over a few seconds), and the probe runs
   the same ONNX file through the same spec on each one, so each received command is matched by
   value (bit-exact: same ONNX Runtime, same input) to the state it was computed from. Latency:
   DDS receipt of the command minus the time just before the state was published (one system
   clock).
3. Hot-swap at 200 Hz: ``policy_path`` set through the parameter service, alternating between
   two policies; time from the request to the first command of the new policy (matched by value
   against its outputs) and to ``~/swap_status`` reporting it; missed ticks around each swap.

No simulator: the states are synthetic, so every run sees the same inputs. Results:
``<out>/realtime.{md,json}`` (``realtime_quick`` with ``--quick``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import rclpy
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, String

from droil_ros import algos
from droil_ros.bench import cpu_times, machine_info, markdown_table, steal_share, write_results
from droil_ros.bringup import BringupNode, NodeGroup
from droil_ros.data.collect import collect
from droil_ros.errors import DroilError
from droil_ros.nodes.cdr import Decoder
from droil_ros.nodes.common import LATCHED_QOS, SENSOR_QOS, imu_msg, joint_state_msg, readings_from_msgs
from droil_ros.nodes.policy import EXECUTORS, TRIGGERS
from droil_ros.policy.export import export_onnx
from droil_ros.policy.runtime import OnnxPolicy
from droil_ros.robots.spec import RobotSpec, load_spec
from droil_ros.sim.envs import make_env

POOL_SECONDS = 3.0  # of distinct states, sent in turn (the node acts on input at most 3 periods old)
LATE = 1.5  # a gap between two published commands longer than this many periods ends in a late tick
SWAP_MARGIN = 0.25  # s of a swap window before the request and after the first new command
DOMAINS = range(96, 102)  # private ROS domain of a bench run (as its test; other tests use 1..95)
DIAGNOSTICS = "policy: control loop"
ECHO = "bare rclpy echo"
# every command kept: a deep reliable queue on the probe's side (the node's own is depth 1)
ALL_COMMANDS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5000)


@dataclass(frozen=True)
class Settings:
    rates: tuple[float, ...] = (200.0, 500.0, 1000.0)
    # the policy node's (trigger, executor) pairs, each measured at each rate
    modes: tuple[tuple[str, str], ...] = (("timer", "single"), ("state", "single"), ("state", "events"))
    echo: bool = True  # the floor: a bare rclpy echo (droil_ros.nodes.echo) at each rate too
    window: float = 20.0  # s of states measured per rate
    warmup: float = 1.0  # s between the first matched command and the window
    swap_rate: float = 200.0
    swaps: int = 20
    swap_spacing: float = 1.5  # s between two swap requests (room for a control window between)
    floor: float = 10.0  # s of a bare sleep loop at the swap rate: the machine's own late ticks
    thread_priority: int = 0  # the node's (and the floor loop's) SCHED_FIFO priority; 0: OS default
    cpu_hogs: int = 0  # busy-loop processes at the OS default priority beside everything measured
    calls: int = 20_000  # inference calls per runtime, back to back
    paced_calls: int = 1000  # and one per control period, as in the loop (caches cool in between)
    train_steps: int = 300  # the policies only need to be real trained MLPs, not good ones
    demo_episodes: int = 8


FULL = Settings()
QUICK = Settings(window=3.0, warmup=0.5, swaps=3, swap_spacing=1.2, floor=2.0, calls=2000,
                 paced_calls=200, train_steps=100, demo_episodes=4)


def _stats_us(seconds) -> dict:
    x = np.asarray(seconds) * 1e6
    return {"n": int(x.size), "p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
            "mean": float(x.mean()), "max": float(x.max())}


def _stats_ms(ns) -> dict:
    x = np.asarray(ns, dtype=np.float64) * 1e-6
    if x.size == 0:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None}
    return {"n": int(x.size), "p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
            "max": float(x.max()), "min": float(x.min())}


# policies --------------------------------------------------------------------------------------


def train_policies(spec: RobotSpec, settings: Settings, seed: int, work: Path):
    """Two BC policies (two seeds, one batch) on LQR demonstrations: the hot-swap needs two, the
    inference comparison the torch module behind the first ONNX file."""
    dataset = collect(spec.id, "lqr", episodes=settings.demo_episodes, seconds=2.0, seed=seed, progress=False)
    learner = algos.create("bc", dataset, spec, preset="paper", seed=seed, n_seeds=2)
    learner.fit(settings.train_steps, progress=False)
    modules = learner.export_modules()
    paths = [export_onnx(module, work / f"bc_seed{seed + k}.onnx", spec,
                         {"learner": "bc", "seed": seed + k, "train_steps": learner.step,
                          "dataset_hash": dataset.hash})
             for k, module in enumerate(modules)]
    return dataset, modules, paths, list(learner.config.hidden)


def bench_inference(path: Path, module: torch.nn.Module, spec: RobotSpec, observations: np.ndarray,
                    calls: int, paced_calls: int, period: float, block: int = 500) -> dict:
    """Per-call latency of the same policy: ONNX Runtime as served and raw, torch eager as served
    (numpy in and out) and raw (a prepared tensor), one thread each, round-robin in blocks; then
    the two served forms once per ``period``, alternating which goes first, as a control loop
    calls them (weights and code leave the caches between calls)."""
    policy = OnnxPolicy(path, spec)
    session = policy._session  # the very session the node runs, without OnnxPolicy's cast and clip
    name = session.get_inputs()[0].name
    obs32 = np.ascontiguousarray(observations, dtype=np.float32)
    tensors = torch.from_numpy(obs32)
    module = module.eval()

    def torch_numpy(x):
        with torch.no_grad():
            return module(torch.from_numpy(x.reshape(1, -1))).numpy()[0]

    def torch_raw(i):
        with torch.no_grad():
            return module(tensors[i:i + 1])

    bound_in = np.zeros((1, spec.obs_dim), np.float32)
    bound_out = np.zeros((1, spec.act_dim), np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input(name, bound_in)
    binding.bind_output(session.get_outputs()[0].name, "cpu", 0, np.float32, bound_out.shape,
                        bound_out.ctypes.data)

    def iobinding(i):
        bound_in[0] = obs32[i]
        session.run_with_iobinding(binding)
        return bound_out

    runners = {
        "onnxruntime: OnnxPolicy.act (as the node)": lambda i: policy.act(observations[i]),
        "onnxruntime: OnnxPolicy (batch API, one row)": lambda i: policy(observations[i]),
        "onnxruntime: session.run": lambda i: session.run(None, {name: obs32[i:i + 1]}),
        "onnxruntime: run_with_iobinding": iobinding,
        "torch eager: numpy in/out": lambda i: torch_numpy(obs32[i]),
        "torch eager: tensor in/out": torch_raw,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        samples = {k: [] for k in runners}
        n = len(observations)
        for run in runners.values():  # warm-up: first calls allocate
            for i in range(200):
                run(i % n)
        done = 0
        while done < calls:
            size = min(block, calls - done)
            for key, run in runners.items():
                times = samples[key]
                for j in range(done, done + size):
                    i = j % n
                    start = time.perf_counter()
                    run(i)
                    times.append(time.perf_counter() - start)
            done += size
        paced = {"onnxruntime: OnnxPolicy.act, one call per period": lambda i: policy.act(observations[i]),
                 "torch eager: numpy in/out, one call per period": lambda i: torch_numpy(obs32[i])}
        samples.update({k: [] for k in paced})
        order = list(paced)
        start = time.monotonic()
        for j in range(paced_calls):
            time.sleep(max(0.0, start + j * period - time.monotonic()))
            for key in order if j % 2 else order[::-1]:
                t = time.perf_counter()
                paced[key](j % n)
                samples[key].append(time.perf_counter() - t)
        ort_out = policy(observations)
        with torch.no_grad():
            torch_out = module(tensors).double().numpy()
    finally:
        torch.set_num_threads(threads)
    return {"runtimes": {k: _stats_us(v) for k, v in samples.items()}, "paced_period_s": period,
            "max_abs_diff_ort_vs_torch": float(np.max(np.abs(ort_out - torch_out))),
            "ort_threads": 1, "torch_threads": 1}


def bench_decoding(spec: RobotSpec, calls: int, block: int = 500) -> dict:
    """Per-message decoding of the node's two inputs from their CDR bytes: rclpy's
    deserialize_message against the node's own decoder (``nodes.cdr``), round-robin in blocks."""
    joints = JointState(name=list(spec.joints), position=[0.1] * len(spec.joints),
                        velocity=[0.2] * len(spec.joints), effort=[0.0] * len(spec.joints))
    joints.header.frame_id = "base_link"
    imu = Imu()
    imu.header.frame_id = spec.imu.get("frame_id", "") or "imu_link"
    imu.orientation.w = 1.0
    raw_joints, raw_imu = serialize_message(joints), serialize_message(imu)
    decoder = Decoder()
    runners = {
        f"JointState ({len(spec.joints)} joints): rclpy deserialize_message":
            lambda: deserialize_message(raw_joints, JointState),
        f"JointState ({len(spec.joints)} joints): the node's decoder":
            lambda: decoder.joint_state(raw_joints),
        "Imu: rclpy deserialize_message": lambda: deserialize_message(raw_imu, Imu),
        "Imu: the node's decoder": lambda: decoder.imu(raw_imu),
    }
    samples = {k: [] for k in runners}
    for run in runners.values():
        for _ in range(200):
            run()
    for done in range(0, calls, block):
        for key, run in runners.items():
            times = samples[key]
            for _ in range(min(block, calls - done)):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
    return {k: _stats_us(v) for k, v in samples.items()}


# the ROS side ----------------------------------------------------------------------------------


class Probe:
    """Publishes distinct states at a fixed rate from a thread of its own (as a driver would),
    keeping the time just before each was published; records commands, diagnostics and swap
    status with their DDS timestamps.

    The states are made before the sender starts, so that the sender does nothing but publish: a
    pool of ``pool`` distinct states near rest, sent in turn (state k is ``states[k % pool]``), and
    the command each policy computes from each, exactly as the node does (readings -> spec
    observation -> one-observation policy call -> command). The node acts on input at most
    ``max_obs_age`` old, so a pool of seconds tells which send of a pool state a command answers."""

    def __init__(self, domain: int, spec: RobotSpec, policies: list[OnnxPolicy], seed: int, pool: int):
        self.spec = spec
        rng = np.random.default_rng(seed)
        env = make_env(spec, "stand")
        env.reset(seed=seed, options={"tilt": 0.05})
        base = env.unwrapped.readings()  # a robot at rest, slightly tilted
        self.imu = imu_msg(base, Time(), spec.imu["frame_id"])
        self.states = [joint_state_msg(replace(base, position=base.position + rng.uniform(-0.5, 0.5, 2),
                                               velocity=base.velocity + rng.uniform(-1.0, 1.0, 2)), Time())
                       for _ in range(pool)]
        observations = [spec.build_observation(readings_from_msgs(msg, self.imu)) for msg in self.states]
        self.keys: list[dict[bytes, int]] = [{} for _ in policies]  # command bytes -> pool index
        self.ambiguous: set[bytes] = set()  # commands of several states (saturated): never matched
        for policy, keys in zip(policies, self.keys, strict=True):
            for j, obs in enumerate(observations):
                key = array("d", spec.action_to_command(policy(obs))).tobytes()
                if key in keys:
                    self.ambiguous.add(key)
                keys[key] = j
        n = len(spec.actuators)  # the echo's answer: the state's first positions
        self.echo_keys = {array("d", msg.position[:n]).tobytes(): j for j, msg in enumerate(self.states)}
        self.sent: list[int] = []  # time.time_ns() just before state k was published
        self.commands: list[tuple[int, int, int, int, bytes]] = []  # received, source, seq, callback
        self.diagnostics: list[tuple[int, dict]] = []
        self.swap_status: list[tuple[int, dict]] = []
        self.stopping = threading.Event()
        self.sender: threading.Thread | None = None

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("realtime_probe", context=self.context)
        self.joint_pub = self.node.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.imu_pub = self.node.create_publisher(Imu, "imu/data", SENSOR_QOS)
        self.node.create_subscription(Float64MultiArray, "effort_controller/commands", self._on_command,
                                      ALL_COMMANDS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.node.create_subscription(String, "/policy/swap_status", self._on_swap_status, LATCHED_QOS)
        self.parameters = AsyncParameterClient(self.node, "policy")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _on_command(self, msg: Float64MultiArray, info: dict) -> None:
        self.commands.append((info["received_timestamp"], info["source_timestamp"],
                              info["publication_sequence_number"], time.time_ns(), msg.data.tobytes()))

    def _on_diagnostics(self, msg: DiagnosticArray, info: dict) -> None:
        for status in msg.status:
            if status.name == DIAGNOSTICS:
                self.diagnostics.append((info["received_timestamp"],
                                         {kv.key: kv.value for kv in status.values}))

    def _on_swap_status(self, msg: String, info: dict) -> None:
        self.swap_status.append((info["received_timestamp"], json.loads(msg.data)))

    # states ---------------------------------------------------------------------------------

    def start(self, rate: float, period_scale: float) -> None:
        """Publish every ``period_scale / rate`` s: a clock slightly off the node's, as an
        unsynchronised driver's, sweeps the phase between state and tick instead of freezing it."""
        self.sender = threading.Thread(target=self._send, args=(period_scale / rate,), daemon=True)
        self.sender.start()

    def _send(self, period: float) -> None:
        start = time.monotonic()
        k = 0
        while not self.stopping.is_set():
            delay = start + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.time_ns()
            stamp = Time(sec=now // 1_000_000_000, nanosec=now % 1_000_000_000)
            state = self.states[k % len(self.states)]
            self.imu.header.stamp = state.header.stamp = stamp
            self.imu_pub.publish(self.imu)  # first, so a tick never pairs a new state with an old Imu
            self.sent.append(time.time_ns())
            self.joint_pub.publish(state)
            k += 1

    def stop(self) -> None:
        self.stopping.set()
        if self.sender is not None:
            self.sender.join(timeout=2.0)

    def close(self) -> None:
        self.stop()
        self.executor.shutdown(timeout_sec=2.0)
        self.spinner.join(timeout=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # queries (the lists only grow; list() takes a consistent prefix under the GIL) ------------

    def first_command(self, policy: int, after_ns: int) -> tuple | None:
        """The first command received after ``after_ns`` that ``policy`` computed."""
        keys = self.keys[policy]
        return next((c for c in list(self.commands)
                     if c[0] > after_ns and c[4] in keys and c[4] not in self.ambiguous), None)

    def swap_reported(self, policy_id: str, after_ns: int) -> tuple | None:
        """The first ~/swap_status received after ``after_ns`` reporting ``policy_id`` acting."""
        return next(((t, s) for t, s in list(self.swap_status)
                     if t > after_ns and s["ok"] and s["policy_id"] == policy_id), None)

    def diagnostics_after(self, after_ns: int) -> dict | None:
        return next((d for t, d in list(self.diagnostics) if t > after_ns), None)

    def wait_for(self, predicate, timeout: float, node: NodeGroup, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            node.check()
            time.sleep(0.005)
        raise DroilError(f"timed out after {timeout:g} s waiting for {what}")


# analysis ----------------------------------------------------------------------------------------


def closed_loop_stats(probe: Probe, rate: float, w0: int, w1: int, periods: list[dict] | None) -> dict:
    """Latency of each state sent in [w0, w1] to its first command; loop health of the commands
    the node published in that window; the node's own counters from its diagnostics
    (``periods``: the last before the window, those published during it and the first after
    it; None for a node without diagnostics, the echo)."""
    sent = np.array(probe.sent, dtype=np.int64)
    commands = list(probe.commands)
    keys, pool = probe.keys[0], len(probe.states)
    first: dict[int, tuple[int, int]] = {}  # state k -> (DDS receipt, probe callback) of its first command
    repeats = safe = unmatched = 0
    zero = array("d", [0.0] * len(probe.spec.actuators)).tobytes()
    for received, source, _, callback, data in commands:  # in order of receipt
        if data in probe.ambiguous:
            continue
        k = keys.get(data)
        if k is not None:  # the latest send of pool state k before the node published its command
            last = int(np.searchsorted(sent, source, side="right")) - 1
            k = last - (last - k) % pool if last >= 0 else None
        if k is not None and k not in first:
            first[k] = (received, callback)
        elif w0 <= source <= w1:
            repeats += k is not None
            safe += k is None and data == zero
            unmatched += k is None and data != zero
    matchable = {j for key, j in keys.items() if key not in probe.ambiguous}
    in_window = [k for k in range(len(sent)) if w0 <= sent[k] <= w1 and k % pool in matchable]
    answered = [k for k in in_window if k in first]
    latency = [first[k][0] - sent[k] for k in answered]
    latency_cb = [first[k][1] - sent[k] for k in answered]
    published = _publish_times(commands, w0, w1)
    gaps = np.diff(published) * 1e-9
    seqs = sorted(c[2] for c in commands if w0 <= c[1] <= w1)
    period = 1.0 / rate
    counters = ("ticks", "overruns", "faults_stale")
    timings = ("inference_p50_us", "inference_p99_us", "loop_p50_us", "loop_p99_us", "jitter_p50_us",
               "jitter_p99_us")
    if periods is None:
        node = dict.fromkeys(counters + timings)
    else:
        node = {key: int(periods[-1][key]) - int(periods[0][key]) for key in counters}
        for key in timings:  # median over the diagnostics periods
            values = [float(d[key]) for d in periods[1:] if d[key] != "n/a"]
            node[key] = float(np.median(values)) if values else None
    return {
        **tick_health(gaps, period),
        "rate_hz": rate, "window_s": (w1 - w0) * 1e-9, "ticks_expected": int(round((w1 - w0) * 1e-9 * rate)),
        "states_sent": len(in_window), "states_answered": len(answered),
        "commands_received": len(published),
        "commands_lost": int(seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0,
        "commands_repeated": repeats, "commands_safe": safe, "commands_unmatched": unmatched,
        "latency_ms": _stats_ms(latency), "latency_probe_callback_ms": _stats_ms(latency_cb),
        "interval_jitter_us": _stats_us(np.abs(gaps - period)) if gaps.size else None,
        "node": node,
    }


def tick_health(gaps: np.ndarray, period: float) -> dict:
    """Late ticks: gaps > LATE periods between two commands (the second tick came late). Missed
    ticks: periods that passed without a command (a ROS timer that falls more than a period
    behind skips the ticks it missed; a late tick followed by one on time misses none)."""
    missed = int(round(gaps.sum() / period)) - gaps.size
    return {"window_s": float(gaps.sum()), "late_ticks": int(np.sum(gaps > LATE * period)),
            "missed_ticks": max(missed, 0),
            "longest_gap_ms": float(gaps.max() * 1e3) if gaps.size else None}


def _publish_times(commands, t0: int, t1: int) -> np.ndarray:
    """The node's publish times (DDS source timestamps, ns) of the commands in [t0, t1], in order."""
    return np.array(sorted(c[1] for c in commands if t0 <= c[1] <= t1), dtype=np.int64)


def _window_health(probe: Probe, t0: int, t1: int, period: float) -> dict:
    return tick_health(np.diff(_publish_times(list(probe.commands), t0, t1)) * 1e-9, period)


def sleep_loop_floor(rate: float, seconds: float, priority: int) -> dict:
    """The machine's own share of late ticks: a bare Python loop sleeping to the same deadlines as
    the node (in a thread at the node's priority), doing nothing else. What this misses no node
    can keep."""
    result = {}

    def loop():
        if priority:
            with contextlib.suppress(PermissionError):
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        result["fifo"] = os.sched_getscheduler(0) == os.SCHED_FIFO
        period, ticks = 1.0 / rate, []
        deadline = time.monotonic() + period
        for _ in range(int(seconds * rate)):
            time.sleep(max(0.0, deadline - time.monotonic()))
            ticks.append(time.monotonic())
            deadline += period
            while deadline < ticks[-1]:  # as a ROS timer: skip the deadlines already past
                deadline += period
        result["gaps"] = np.diff(ticks)

    thread = threading.Thread(target=loop, name="floor")
    thread.start()
    thread.join()
    return {"rate_hz": rate, "fifo": result["fifo"], **tick_health(result["gaps"], 1.0 / rate)}


def hot_swaps(probe: Probe, node: NodeGroup, paths: list[Path], ids: list[str], settings: Settings) -> list:
    """Alternate ``policy_path`` between the two policies; per swap the request -> parameter
    answer, -> first command of the new policy, -> ~/swap_status times, the node's own swap_ms,
    and the tick health from SWAP_MARGIN before the request to SWAP_MARGIN after the first new
    command, and in a control window of the same length just before it, with no swap."""
    period = 1.0 / settings.swap_rate
    margin = int(SWAP_MARGIN * 1e9)
    swaps, previous_end = [], 0
    for i in range(settings.swaps):
        new = (i + 1) % 2
        answered: list[int] = []
        asked = time.time_ns()
        future = probe.parameters.set_parameters([Parameter("policy_path", Parameter.Type.STRING,
                                                            str(paths[new]))])
        future.add_done_callback(lambda _, answered=answered: answered.append(time.time_ns()))
        first = probe.wait_for(lambda new=new, asked=asked: probe.first_command(new, asked), 10.0, node,
                               f"a command of {ids[new]} after swap {i + 1}")
        status = probe.wait_for(lambda new=new, asked=asked: probe.swap_reported(ids[new], asked), 5.0, node,
                                "~/swap_status")
        probe.wait_for(future.done, 5.0, node, "the parameter service's answer")
        result = future.result().results[0]
        if not result.successful:
            raise DroilError(f"policy_path refused: {result.reason}")
        diagnostics = probe.wait_for(lambda first=first: probe.diagnostics_after(first[0]), 5.0, node,
                                     "diagnostics")
        w0, w1 = asked - margin, first[1] + margin
        # the next request leaves room for its control window after this swap's window
        time.sleep(max(0.0, asked * 1e-9 + settings.swap_spacing - time.time(),
                       (w1 + (w1 - w0)) * 1e-9 + 0.1 + SWAP_MARGIN - time.time()))
        old = probe.keys[1 - new]
        old_after = sum(1 for c in list(probe.commands)
                        if c[0] > first[0] and c[4] in old and c[4] not in probe.ambiguous)
        health = _window_health(probe, w0, w1, period)
        # as long as the swap window, unless that would reach back into the previous one
        control = _window_health(probe, max(w0 - (w1 - w0), previous_end) - 50_000_000, w0 - 50_000_000,
                                 period)
        previous_end = w1 + 100_000_000
        swaps.append({
            "to": ids[new], "parameter_answer_ms": (answered[0] - asked) * 1e-6,
            "first_command_ms": (first[0] - asked) * 1e-6, "swap_status_ms": (status[0] - asked) * 1e-6,
            "node_swap_ms": float(diagnostics["swap_ms"]),
            "old_policy_commands_after": old_after, **health,
            "control": control,
        })
    return swaps


def serve(spec: RobotSpec, rate: float, paths: list[Path], policies: list[OnnxPolicy], settings: Settings,
          domain: int, seed: int, work: Path, swap: bool, mode: tuple[str, str] = ("timer", "single"),
          ) -> dict:
    """One node process at ``rate``: the latency window, then (``swap``) the hot-swaps. ``mode``:
    the policy node's trigger and executor; trigger "echo": the bare echo on that executor."""
    env = {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    swaps = 3 * settings.swaps * settings.swap_spacing if swap else 0
    limit = 60 + settings.warmup + settings.window + swaps
    trigger, executor = mode
    events = " (events executor)" if executor == "events" else ""
    if trigger == "echo":
        executable, params, controller = "echo", {"robot": spec.id, "executor": executor}, ECHO + events
    else:
        executable = "policy"
        controller = f"policy node ({trigger}{', events executor' if events else ''})"
        params = {"robot": spec.id, "policy_path": str(paths[0]), "policy_dir": str(paths[0].parent),
                  "control_rate_hz": float(rate), "trigger": trigger, "executor": executor,
                  "autostart": True, "diagnostics_period": 0.5, "thread_priority": settings.thread_priority}
    node = NodeGroup(work / f"{executable}_{'_'.join(mode)}_{rate:g}hz", env, limit)
    node.start(BringupNode(executable, params))
    try:
        probe = Probe(domain, spec, policies, seed, int(POOL_SECONDS * rate))
        if trigger == "echo":
            probe.keys[0] = probe.echo_keys
        try:
            result = _measure(probe, node, rate, paths, policies, settings, swap,
                              diagnostics=trigger != "echo")
        finally:
            probe.close()
    finally:
        code = node.stop()[executable]
    if code != 0:
        raise DroilError(f"{executable} node did not exit cleanly on SIGTERM (code {code}): "
                         f"{node.tail(executable)}")
    return {"controller": controller, **result, "node_exit_code": code}


def _measure(probe: Probe, node: NodeGroup, rate: float, paths: list[Path], policies: list[OnnxPolicy],
             settings: Settings, swap: bool, diagnostics: bool = True) -> dict:
    ticks = rate * settings.window
    probe.start(rate, 1.0 + 1.0 / ticks)  # the phase sweeps one full period over the window
    # the node vets its policy in a low-priority process at configure: slow on a loaded machine
    probe.wait_for(lambda: probe.first_command(0, 0), 120.0, node, "the first matched command")
    time.sleep(settings.warmup)
    if diagnostics:
        probe.wait_for(lambda: probe.diagnostics_after(0), 5.0, node, "diagnostics")
        before = list(probe.diagnostics)[-1][1]  # counters at most one diagnostics period old
    w0 = time.time_ns()
    time.sleep(settings.window)
    w1 = time.time_ns()
    periods = None
    if diagnostics:
        probe.wait_for(lambda: probe.diagnostics_after(w1), 5.0, node, "diagnostics")
        received = list(probe.diagnostics)
        last = next(i for i, (t, _) in enumerate(received) if t > w1)
        periods = [before] + [d for t, d in received[:last + 1] if t > w0]
    result = closed_loop_stats(probe, rate, w0, w1, periods)
    result["ambiguous_commands"] = len(probe.ambiguous)
    if swap:
        result["swaps"] = hot_swaps(probe, node, paths, [p.policy_id for p in policies], settings)
    node.check()
    return result


@contextlib.contextmanager
def _cpu_hogs(count: int):
    """``count`` processes that only burn CPU, as other jobs on a robot's computer do."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@contextlib.contextmanager
def _localhost_discovery():
    """The probe's context reads discovery settings from the environment at init."""
    previous = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        else:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = previous


# report ------------------------------------------------------------------------------------------


def _percent(share: float | None) -> float | None:
    return None if share is None else 100.0 * share


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _us_rows(stats: dict) -> list[list]:
    return [[name, f"{v['p50']:.1f}", f"{v['p99']:.1f}", f"{v['mean']:.1f}", f"{v['max']:.0f}"]
            for name, v in stats.items()]


def report(payload: dict, command_line: str) -> str:
    s, inf = payload["settings"], payload["inference"]
    load0, load1 = payload["load_average_start"], payload["load_average_end"]
    inference_rows = _us_rows(inf["runtimes"])
    loop_rows, health_rows, floor_rows = [], [], []
    echo = {(r["rate_hz"], "events" in r["controller"]): r["latency_ms"] for r in payload["closed_loop"]
            if r["controller"].startswith(ECHO)}
    for r in payload["closed_loop"]:
        lat, node = r["latency_ms"], r["node"]
        callback = r["latency_probe_callback_ms"]
        floor_p99 = echo.get((r["rate_hz"], "events" in r["controller"]), {}).get("p99")
        answered = f"{r['states_answered']} / {r['states_sent']}"
        floor_rows.append([f"{r['rate_hz']:g}", r["controller"], answered,
                           _f(lat["p50"]), _f(lat["p99"]), r["missed_ticks"],
                           _f(lat["p99"] / floor_p99) if lat["p99"] and floor_p99 else "-"])
        loop_rows.append([f"{r['rate_hz']:g}", r["controller"], answered,
                          _f(lat["p50"]), _f(lat["p99"]), _f(lat["max"]), _f(lat["min"]),
                          _f(callback["p50"]), _f(callback["p99"])])
        jitter = r["interval_jitter_us"] or {}
        health_rows.append([f"{r['rate_hz']:g}", r["controller"], r["ticks_expected"],
                            r["commands_received"],
                            r["commands_lost"], r["late_ticks"], r["missed_ticks"], _f(r["longest_gap_ms"]),
                            _f(jitter.get("p50"), 0), _f(jitter.get("p99"), 0),
                            f"{_f(node['overruns'], 0)} / {_f(node['ticks'], 0)}",
                            _f(node["faults_stale"], 0),
                            r["commands_safe"], r["commands_unmatched"],
                            f"{_f(node['inference_p50_us'], 0)} / {_f(node['inference_p99_us'], 0)}"])
    swaps = payload["swaps"]
    swap_rows = [[i + 1, s_["to"], _f(s_["parameter_answer_ms"]), _f(s_["first_command_ms"]),
                  _f(s_["swap_status_ms"]), _f(s_["node_swap_ms"], 1), s_["old_policy_commands_after"],
                  f"{s_['late_ticks']} / {s_['missed_ticks']}", _f(s_["longest_gap_ms"]),
                  f"{s_['control']['late_ticks']} / {s_['control']['missed_ticks']}",
                  _f(s_["control"]["longest_gap_ms"])] for i, s_ in enumerate(swaps)]
    summary, floor = payload["swap_summary"], payload["floor"]
    swap_rate = s["swap_rate"]
    priority = (f"SCHED_FIFO priority {s['thread_priority']} (`thread_priority`)" if s["thread_priority"]
                else "the OS default scheduling")
    machine = payload["machine"]
    return (
        f"# Real-time serving{' (quick)' if payload['quick'] else ''}\n\n"
        f"Robot `{payload['robot']}`; policy: BC, MLP {payload['hidden']} (as the learners export), "
        f"trained {s['train_steps']} steps on {payload['dataset_size']} LQR transitions, "
        f"seed {payload['seed']}. "
        f"Machine: {machine['cpus']} CPUs ({machine['processor']}), {machine['platform']}, Python "
        f"{machine['python']}, onnxruntime {machine['versions']['onnxruntime']}, torch "
        f"{machine['versions']['torch']}; **shared with other jobs: load average "
        f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} (1/5/15 min) at start, {load1[0]:.2f} at end**, "
        f"CPU time stolen by the hypervisor during the run: {_f(_percent(payload['cpu_steal']), 1)} %, "
        f"niceness {payload['niceness']}. "
        + (f"**{s['cpu_hogs']} CPU hog(s)** (processes that only spin, at the OS default priority) "
           f"ran beside the whole run. " if s["cpu_hogs"] else "")
        + f"The node's control loop runs under {priority}, the probe at "
        f"the OS default, on CPUs shared with that load: the tails measure the contention as "
        f"much as the software. Wall time {payload['wall_seconds']:.0f} s.\n\n"
        f"Reproduce: `{command_line}`\n\n"
        f"## 1. Inference, one observation per call (µs)\n\n"
        f"Back to back: {s['calls']} calls each after 200 warm-up calls, one thread each, round-robin "
        f"in blocks of 500 so that the machine's load hits all alike. `OnnxPolicy.act` (the node's call) "
        f"adds the float32 cast and the clip the node does to `run_with_iobinding` (buffers bound "
        f"once); the batch API allocates per call; `numpy in/out` adds the tensor conversions. One call per "
        f"period: {s['paced_calls']} calls each, one every {inf['paced_period_s'] * 1e3:g} ms (the "
        f"{s['swap_rate']:g} Hz loop), which goes first alternating: between calls the machine's other "
        f"work evicts weights and code from the shared caches, as it does in a control loop; "
        f"back to back is the warm-cache floor. Inputs: observations of the demonstrations. ONNX vs "
        f"torch outputs differ by at most {inf['max_abs_diff_ort_vs_torch']:.1e} N·m.\n\n"
        + markdown_table(["runtime", "p50", "p99", "mean", "max"], inference_rows)
        + (f"\nDecoding the node's inputs from their CDR bytes, {s['calls']} messages each (µs):\n\n"
           + markdown_table(["decoder", "p50", "p99", "mean", "max"], _us_rows(payload["decoding"]))
           if "decoding" in payload else "")
        + f"\n## 2. Closed loop across processes: state published -> command received (ms)\n\n"
        f"The policy node in its own process (`autostart`, `control_rate_hz` as listed, default "
        f"`max_obs_age` of 3 periods); this process publishes a distinct JointState (with an Imu) "
        f"at the same rate and matches each received command by value to the state it was computed "
        f"from (bit-exact: it runs the same ONNX file through the same spec). Latency = DDS receipt "
        f"of the command - time just before the state was published, for the first command of "
        f"each state in a {s['window']:g} s window; `callback` is the same up to the probe's Python "
        f"callback. **With `trigger: timer` a state waits up to one period for the next tick**; "
        f"with `trigger: state` the node acts when the state arrives (`events executor`: on rclpy's "
        f"EventsExecutor, `executor: events`); the bare rclpy echo "
        f"(`droil_ros.nodes.echo`: same executor and QoS, no work) answers each state with its "
        f"positions, matched the same way: the floor of Python and DDS here. "
        f"The probe's clock runs 1/(rate x window) slow, so the phase between states and ticks "
        f"sweeps exactly one period during the window (as with an unsynchronised driver): p50 "
        f"includes about half a period of waiting, `min` is the reaction with none (transport + "
        f"observation + inference + publish). A state goes unanswered when the next one arrives before a "
        f"tick: once per window from the sweep, and whenever the node misses ticks or finds its "
        f"input stale.\n\n"
        + markdown_table(["rate Hz", "controller", "states answered", "p50", "p99", "max", "min",
                          "callback p50", "callback p99"], loop_rows)
        + "\nAgainst the floor: each controller's p99 over the p99 of the bare echo on the same "
        "executor at the same rate, measured in this run.\n\n"
        + markdown_table(["rate Hz", "controller", "states answered", "p50", "p99", "missed ticks",
                          "p99 / echo p99"], floor_rows)
        + f"\nLoop health over the same windows, from the node's publish timestamps (DDS source "
        f"timestamps) and its `/diagnostics`: a late tick ends a gap > {LATE:g} periods between two "
        f"published commands; a missed tick is a period without any command (a ROS timer more "
        f"than a period behind skips the ticks it missed); jitter = |interval - period|; overruns "
        f"and stale faults are the node's "
        f"counters; safe = zero-torque commands (the node's answer to stale input); unmatched = "
        f"non-zero commands that match no state (expect 0); node inference = the node's own "
        f"timing of the policy call, median over its 0.5 s diagnostics periods.\n\n"
        + markdown_table(["rate Hz", "controller", "ticks expected", "commands", "lost", "late ticks",
                          "missed ticks",
                          "longest gap ms", "jitter p50 µs", "jitter p99 µs", "node overruns / ticks",
                          "stale faults", "safe", "unmatched", "node inference p50 / p99 µs"],
                         health_rows)
        + f"\n## 3. Hot-swap at {swap_rate:g} Hz\n\n"
        f"`policy_path` set through the parameter service {len(swaps)} times, alternating between two "
        f"policies, {s['swap_spacing']:g} s apart, with states flowing as above. Times (ms) from just "
        f"before the request: the parameter service's answer, the DDS receipt of the first command "
        f"computed by the new policy (matched by value), and of `~/swap_status` reporting it; "
        f"`node` is the node's own request-to-first-action time (`swap_ms` in `/diagnostics`). "
        f"`old after` = commands of the old policy received after the first of the new one "
        f"(expect 0). Late / missed ticks (as in section 2) in the swap window, from "
        f"{SWAP_MARGIN:g} s before the request to {SWAP_MARGIN:g} s after the first new command, "
        f"and in a control window of the same length just before it, with no swap: what the "
        f"swap adds is the difference.\n\n"
        + markdown_table(["swap", "to", "parameter answer", "first new command", "swap_status", "node",
                          "old after", "late / missed ticks", "longest gap ms",
                          "control: late / missed", "control: longest gap ms"], swap_rows)
        + f"\nFirst new command: median {_f(summary['first_command_ms']['p50'])} ms, max "
        f"{_f(summary['first_command_ms']['max'])} ms. Across all swap windows "
        f"({summary['swap']['window_s']:.1f} s): **{summary['swap']['late_ticks']} late and "
        f"{summary['swap']['missed_ticks']} missed ticks**; across the control windows "
        f"({summary['control']['window_s']:.1f} s): {summary['control']['late_ticks']} late and "
        f"{summary['control']['missed_ticks']} missed.\n\n"
        f"The machine's floor: a bare Python loop in this process sleeping to {swap_rate:g} Hz "
        f"deadlines for {floor['window_s']:.0f} s, doing nothing else "
        f"({'SCHED_FIFO' if floor['fifo'] else 'OS default scheduling'}), had "
        f"{floor['late_ticks']} late and {floor['missed_ticks']} missed ticks (longest gap "
        f"{_f(floor['longest_gap_ms'])} ms): what the machine alone takes from a loop.\n"
    )


def run(robot: str, out_dir: Path, settings: Settings = FULL, seed: int = 0, quick: bool = False,
        domain: int | None = None) -> dict:
    started = time.time()
    load_start, cpu_start = os.getloadavg(), cpu_times()
    spec = load_spec(robot)
    if not spec.uses_sensor_observation:
        raise DroilError(f"the realtime bench serves robots observed through JointState + Imu; "
                         f"'{spec.id}' observes through Gymnasium")
    if not 0 <= settings.thread_priority <= 99:
        raise DroilError(f"thread priority must be 0 (OS default) or 1-99, got {settings.thread_priority}")
    if not settings.modes or any(t not in TRIGGERS or e not in EXECUTORS for t, e in settings.modes):
        raise DroilError(f"modes must be (trigger, executor) pairs of {TRIGGERS} and {EXECUTORS}, "
                         f"got {settings.modes}")
    if settings.swap_rate not in settings.rates:
        raise DroilError(f"swap rate {settings.swap_rate:g} Hz must be one of the rates {settings.rates}")
    domain = random.choice(DOMAINS) if domain is None else domain
    if settings.cpu_hogs < 0:
        raise DroilError(f"cpu hogs must be 0 or more, got {settings.cpu_hogs}")
    with tempfile.TemporaryDirectory(prefix="droil_realtime_") as tmp, _localhost_discovery(), \
            _cpu_hogs(settings.cpu_hogs):
        work = Path(tmp)
        torch.manual_seed(seed)
        dataset, modules, paths, hidden = train_policies(spec, settings, seed, work)
        print(f"trained 2 policies ({hidden}) in {time.time() - started:.0f} s", flush=True)
        inference = bench_inference(paths[0], modules[0], spec, dataset.observations.astype(np.float64),
                                    settings.calls, settings.paced_calls, 1.0 / settings.swap_rate)
        print("inference p50: " + ", ".join(f"{k} {v['p50']:.1f} µs"
                                            for k, v in inference["runtimes"].items()), flush=True)
        decoding = bench_decoding(spec, settings.calls)
        policies = [OnnxPolicy(p, spec) for p in paths]
        closed_loop = []
        for rate in settings.rates:
            executors = dict.fromkeys(e for _, e in settings.modes) if settings.echo else {}
            for mode in (*settings.modes, *(("echo", e) for e in executors)):
                result = serve(spec, rate, paths, policies, settings, domain, seed, work,
                               swap=rate == settings.swap_rate and mode == settings.modes[0], mode=mode)
                closed_loop.append(result)
                lat = result["latency_ms"]
                print(f"{rate:g} Hz, {result['controller']}: latency p50 {_f(lat['p50'])} p99 "
                      f"{_f(lat['p99'])} max {_f(lat['max'])} ms, {result['states_answered']}/"
                      f"{result['states_sent']} states answered, {result['missed_ticks']} missed ticks",
                      flush=True)
        floor = sleep_loop_floor(settings.swap_rate, settings.floor, settings.thread_priority)
        print(f"bare sleep loop at {settings.swap_rate:g} Hz: {floor['late_ticks']} late, "
              f"{floor['missed_ticks']} missed ticks in {floor['window_s']:.0f} s", flush=True)
    swaps = next(r for r in closed_loop if "swaps" in r).pop("swaps")
    summary = {key: _stats_ms(np.array([s[key] for s in swaps]) * 1e6)
               for key in ("parameter_answer_ms", "first_command_ms", "swap_status_ms")}
    for name, windows in (("swap", swaps), ("control", [s["control"] for s in swaps])):
        summary[name] = {key: sum(w[key] for w in windows)
                         for key in ("window_s", "late_ticks", "missed_ticks")}
    payload = {
        "robot": spec.id, "quick": quick, "seed": seed, "hidden": hidden, "dataset_size": len(dataset),
        "settings": asdict(settings), "domain": domain, "niceness": os.nice(0),
        "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
        "cpu_steal": steal_share(cpu_start, cpu_times()),
        "inference": inference, "decoding": decoding, "closed_loop": closed_loop, "swaps": swaps,
        "swap_summary": summary,
        "floor": floor,
        "wall_seconds": time.time() - started, "machine": machine_info(),
    }
    tag = ("realtime_quick" if quick else "realtime") + (
        f"_fifo{settings.thread_priority}" if settings.thread_priority else "") + (
        f"_hogs{settings.cpu_hogs}" if settings.cpu_hogs else "")
    command_line = (f"droil bench realtime --robot {robot} --seed {seed}" + (" --quick" if quick else "")
                    + (f" --thread-priority {settings.thread_priority}" if settings.thread_priority else "")
                    + (f" --cpu-hogs {settings.cpu_hogs}" if settings.cpu_hogs else ""))
    markdown = report(payload, command_line)
    write_results(out_dir, tag, payload, markdown)
    print(markdown)
    return payload


def main(args) -> int:
    settings = QUICK if args.quick else FULL
    settings = replace(settings, train_steps=args.steps or settings.train_steps,
                       demo_episodes=args.episodes or settings.demo_episodes,
                       thread_priority=args.thread_priority, cpu_hogs=args.cpu_hogs)
    run(args.robot, Path(args.out), settings, seed=args.seed, quick=args.quick)
    return 0
