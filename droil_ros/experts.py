"""Locomotion experts: TD3 (or SAC) from stable-baselines3 trained under nominal dynamics, exported
to ONNX like any learner policy, and the DRBC-protocol expert datasets rolled out from them.

Why our own experts: the DRBC/BE-DROIL protocol uses pre-trained RL-Zoo TD3 agents, which cannot
be downloaded here (research/bedroil.md §5). Training runs on the project's env (``make_env``), so
the observation is exactly the robot spec's, and it is resumable: a run directory holds the
latest model and replay buffer, so one run can span several sessions.

Run directory (``runs/experts/<robot>/``): ``checkpoint.zip`` (model), ``replay_buffer.pkl``,
``state.json`` (steps, wall time, config, best evaluation), ``best.zip`` (best evaluated policy),
``eval.csv`` (learning curve: deterministic evaluations on nominal dynamics).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from droil_ros.data.collect import collect
from droil_ros.data.dataset import TransitionDataset
from droil_ros.errors import DroilError
from droil_ros.policy.export import export_onnx
from droil_ros.resources import data_path
from droil_ros.robots.spec import RobotSpec, load_spec
from droil_ros.sim.envs import make_env
from droil_ros.sim.rollout import run_episode, summarise


@dataclass
class ExpertConfig:
    """RL-Zoo TD3/SAC MuJoCo settings; 256-256 networks as in the TD3 authors' reference code
    (1.5x faster per step here than the Zoo's 400-300 TD3 and than SAC)."""

    algo: str = "td3"                 # td3 | sac
    net_arch: tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4
    batch_size: int = 256
    buffer_size: int = 1_000_000       # all of a 1M-step run: nothing is forgotten
    learning_starts: int = 10_000     # uniform random actions first
    gamma: float = 0.99
    tau: float = 0.005
    action_noise: float = 0.1         # TD3 exploration: Gaussian std on the [-1, 1] action
    eval_every: int = 10_000          # env steps between deterministic evaluations
    eval_episodes: int = 5
    checkpoint_minutes: float = 10.0  # wall time between checkpoints

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


ALGOS = ("td3", "sac")
# the nominal-return targets; training stops once a deterministic evaluation reaches it
TARGETS = {"hopper": 3000.0, "walker2d": 3500.0, "halfcheetah": 6000.0, "ant": 3000.0}
# DRBC protocol: the first N transitions of deterministic expert rollouts (research/bedroil.md §5)
DATASET_SIZES = {"hopper": 2000, "halfcheetah": 3000, "walker2d": 6000, "ant": 8000}
TRAIN_EVAL_SEED = 10_000  # evaluation seeds during training (fixed, so the curve is comparable)
NOMINAL_EVAL_SEED = 1000  # the committed nominal return: the robustness grid's seeds
CHECKPOINT, BUFFER, STATE = "checkpoint.zip", "replay_buffer.pkl", "state.json"
BEST, CURVE = "best.zip", "eval.csv"
CURVE_FIELDS = ("steps", "wall_seconds", "steps_per_second", "eval_return", "eval_return_std",
                "eval_fall_rate", "train_return")


def locomotion_spec(robot: str | RobotSpec) -> RobotSpec:
    """The spec of a robot that gets an RL expert; the wheel-legged robot's expert is its LQR."""
    spec = robot if isinstance(robot, RobotSpec) else load_spec(robot)
    if not spec.gymnasium_id:
        raise DroilError(f"robot '{spec.id}' has an LQR expert, not an RL one (use `droil collect "
                         f"--robot {spec.id} --expert lqr`); RL experts are for the Gymnasium "
                         f"locomotion robots ({', '.join(TARGETS)})")
    return spec


def run_dir_of(robot: str, run_dir: str | Path | None = None) -> Path:
    return Path(run_dir) if run_dir else Path("runs", "experts", robot)


def expert_path(robot: str) -> Path:
    """Where the committed expert of ``robot`` lives (its JSON beside it)."""
    return data_path("models", "experts", f"{robot}.onnx")


class Float32Obs(gym.ObservationWrapper):
    """float32 observations, as the ONNX policy sees them; halves the replay buffer."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low.astype(np.float32),
                                                space.high.astype(np.float32), dtype=np.float32)

    def observation(self, observation):
        return np.asarray(observation, dtype=np.float32)


def _training_env(spec: RobotSpec) -> gym.Env:
    env = Float32Obs(make_env(spec))
    if env.observation_space.shape != (spec.obs_dim,):
        raise DroilError(f"robot '{spec.id}': env observation {env.observation_space.shape} does not "
                         f"match the spec's {spec.obs_dim}")
    return env


def _algo_class(algo: str):
    from stable_baselines3 import SAC, TD3

    if algo not in ALGOS:
        raise DroilError(f"unknown expert algorithm '{algo}' (known: {', '.join(ALGOS)})")
    return {"td3": TD3, "sac": SAC}[algo]


def _new_model(config: ExpertConfig, env: gym.Env, seed: int):
    from stable_baselines3.common.noise import NormalActionNoise

    kwargs = dict(learning_rate=config.learning_rate, batch_size=config.batch_size,
                  buffer_size=config.buffer_size, learning_starts=config.learning_starts,
                  gamma=config.gamma, tau=config.tau, train_freq=1, gradient_steps=1,
                  policy_kwargs=dict(net_arch=list(config.net_arch)), seed=seed, device="cpu", verbose=0)
    if config.algo == "td3":
        n = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), config.action_noise * np.ones(n))
    return _algo_class(config.algo)("MlpPolicy", env, **kwargs)


class DeterministicActor(torch.nn.Module):
    """Raw observation -> the SB3 actor's deterministic action, mapped from [-1, 1] onto the
    action space as ``predict(deterministic=True)`` does (clipping is left to the runtime)."""

    def __init__(self, model):
        super().__init__()
        from stable_baselines3 import TD3

        actor = model.actor
        if isinstance(model, TD3):
            self.net = copy.deepcopy(torch.nn.Sequential(actor.features_extractor, actor.mu))
        else:  # SAC: tanh of the Gaussian's mean
            self.net = copy.deepcopy(torch.nn.Sequential(actor.features_extractor, actor.latent_pi,
                                                         actor.mu, torch.nn.Tanh()))
        space = model.action_space
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.low + 0.5 * (self.net(obs) + 1.0) * (self.high - self.low)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _policy_return(model, env, episodes: int, seed: int) -> dict:
    def controller(obs):
        return model.predict(np.asarray(obs, dtype=np.float32), deterministic=True)[0]

    return summarise([run_episode(env, controller, seed + k) for k in range(episodes)])


class _Progress:
    """SB3 callback body: evaluate every ``eval_every`` steps (CSV + best model), checkpoint every
    ``checkpoint_minutes`` and on SIGTERM, stop at the target return."""

    def __init__(self, run: Path, spec: RobotSpec, config: ExpertConfig, state: dict, stop_at: float,
                 log):
        self.run, self.config, self.state, self.stop_at, self.log = run, config, state, stop_at, log
        self.eval_env = make_env(spec)
        self.started = time.monotonic()
        self.wall_before = state["wall_seconds"]
        self.steps_before = state["steps"]
        self.last_checkpoint = self.started
        self.terminate = threading.Event()

    def wall(self) -> float:
        return self.wall_before + time.monotonic() - self.started

    def checkpoint(self, model) -> None:
        """Buffer, then model, then state (which names the step count): each file atomically."""
        tmp_buffer, tmp_model = self.run / f".{BUFFER}.tmp.pkl", self.run / f".{CHECKPOINT}.tmp.zip"
        model.save_replay_buffer(tmp_buffer)
        os.replace(tmp_buffer, self.run / BUFFER)
        model.save(tmp_model)
        os.replace(tmp_model, self.run / CHECKPOINT)
        self.state.update(steps=int(model.num_timesteps), wall_seconds=round(self.wall(), 1),
                          updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _write_json(self.run / STATE, self.state)
        self.last_checkpoint = time.monotonic()

    def evaluate(self, model) -> dict:
        result = _policy_return(model, self.eval_env, self.config.eval_episodes, TRAIN_EVAL_SEED)
        returns = [e["r"] for e in model.ep_info_buffer]
        session_seconds = time.monotonic() - self.started
        row = {"steps": int(model.num_timesteps), "wall_seconds": round(self.wall(), 1),
               "steps_per_second": round((model.num_timesteps - self.steps_before) / session_seconds, 1),
               "eval_return": round(result["return"], 2), "eval_return_std": round(result["return_std"], 2),
               "eval_fall_rate": result["fall_rate"],
               "train_return": round(float(np.mean(returns)), 2) if returns else ""}
        curve = self.run / CURVE
        new = not curve.is_file()
        with curve.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.state["best_return"] is None or result["return"] > self.state["best_return"]:
            tmp = self.run / f".{BEST}.tmp.zip"
            model.save(tmp)
            os.replace(tmp, self.run / BEST)
            self.state.update(best_return=round(result["return"], 2), best_steps=int(model.num_timesteps))
            _write_json(self.run / STATE, self.state)  # best.zip and best_steps agree at all times
        self.log(f"{row['steps']} steps  {row['wall_seconds'] / 60:.1f} min  eval {row['eval_return']:.0f} "
                 f"± {row['eval_return_std']:.0f} (falls {row['eval_fall_rate']:.0%})  train "
                 f"{row['train_return'] if row['train_return'] == '' else round(row['train_return'])}  "
                 f"{row['steps_per_second']:.0f} steps/s")
        return row

    def on_step(self, model) -> bool:
        stop = self.terminate.is_set()
        if model.num_timesteps % self.config.eval_every == 0:
            stop = stop or self.evaluate(model)["eval_return"] >= self.stop_at
        if stop or time.monotonic() - self.last_checkpoint >= 60 * self.config.checkpoint_minutes:
            self.checkpoint(model)
        return not stop


def train(robot: str, steps: int, algo: str = "td3", seed: int = 0, run_dir: str | Path | None = None,
          resume: bool = True, stop_at: float | None = None, command: str = "", log=print,
          **overrides) -> dict:
    """Train (or resume) the expert of ``robot`` up to ``steps`` env steps in total; stops early once a
    deterministic evaluation reaches ``stop_at`` (default: the robot's target; ``inf``: never).
    Returns the run state (steps, wall time, best evaluation)."""
    from stable_baselines3.common.callbacks import BaseCallback

    spec = locomotion_spec(robot)
    run = run_dir_of(spec.id, run_dir)
    stop_at = TARGETS.get(spec.id, math.inf) if stop_at is None else stop_at
    env = _training_env(spec)
    unknown = set(overrides) - {f.name for f in fields(ExpertConfig)}
    if unknown:
        raise DroilError(f"unknown expert config keys: {', '.join(sorted(unknown))}")
    if resume and (run / STATE).is_file() and (run / CHECKPOINT).is_file():
        state = json.loads((run / STATE).read_text())
        if state["robot"] != spec.id or state["algo"] != algo:
            raise DroilError(f"{run} holds a {state['algo']} run of '{state['robot']}', not {algo} of "
                             f"'{spec.id}': pass another --run-dir or --no-resume")
        if state["robot_hash"] != spec.hash:
            raise DroilError(f"{run} was trained on another version of robot spec '{spec.id}': --no-resume")
        if not (run / BUFFER).is_file():
            raise DroilError(f"{run}: {BUFFER} is missing, cannot resume: --no-resume starts over")
        config = ExpertConfig(**{**state["config"], "net_arch": tuple(state["config"]["net_arch"]),
                                 **overrides})
        model = _algo_class(algo).load(run / CHECKPOINT, env=env, device="cpu")
        model.load_replay_buffer(run / BUFFER)
        log(f"resumed {run} at {model.num_timesteps} steps ({state['wall_seconds'] / 60:.1f} min so far)")
    else:
        config = ExpertConfig(algo=algo, **overrides)
        _algo_class(algo)  # unknown algorithm: fail before touching the run directory
        run.mkdir(parents=True, exist_ok=True)
        for name in (CHECKPOINT, BUFFER, STATE, BEST, CURVE):
            (run / name).unlink(missing_ok=True)
        model = _new_model(config, env, seed)
        state = {"robot": spec.id, "robot_hash": spec.hash, "algo": algo, "seed": seed,
                 "config": config.to_dict(), "steps": 0, "wall_seconds": 0.0,
                 "best_return": None, "best_steps": 0}
    state.update(steps_target=steps, stop_at=None if math.isinf(stop_at) else stop_at,
                 command=command or state.get("command", ""), config=config.to_dict())
    best = -math.inf if state["best_return"] is None else state["best_return"]
    if best >= stop_at or model.num_timesteps >= steps:
        log(f"{run}: nothing to do (at {model.num_timesteps} of {steps} steps, best evaluation "
            f"{best:.0f}, target {stop_at:g})")
        return state

    progress = _Progress(run, spec, config, state, stop_at, log)

    class Callback(BaseCallback):
        def _on_step(self) -> bool:
            return progress.on_step(self.model)

    handler = None
    if threading.current_thread() is threading.main_thread():  # checkpoint instead of dying on SIGTERM
        handler = signal.signal(signal.SIGTERM, lambda *_: progress.terminate.set())
    try:
        model.learn(steps - model.num_timesteps, callback=Callback(), reset_num_timesteps=False)
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    progress.checkpoint(model)
    log(f"{run}: stopped at {model.num_timesteps} steps after {state['wall_seconds'] / 60:.1f} min, best "
        f"evaluation {state['best_return']} at {state['best_steps']} steps")
    return state


def load_run(robot: str, run_dir: str | Path | None = None, which: str = "best"):
    """(SB3 model, run state) of a run: its best evaluated policy, or the last checkpoint."""
    spec = locomotion_spec(robot)
    run = run_dir_of(spec.id, run_dir)
    files = {"best": BEST, "last": CHECKPOINT}
    if which not in files:
        raise DroilError(f"unknown checkpoint '{which}' (best or last)")
    path = run / files[which]
    if not path.is_file() or not (run / STATE).is_file():
        raise DroilError(f"no {which} checkpoint in {run}: train first (`droil expert train --robot "
                         f"{spec.id}`)")
    state = json.loads((run / STATE).read_text())
    return _algo_class(state["algo"]).load(path, device="cpu"), state


def export(robot: str, out: str | Path | None = None, run_dir: str | Path | None = None,
           which: str = "best") -> Path:
    """Write the run's deterministic actor as a droil ONNX policy (same metadata as learners)."""
    spec = locomotion_spec(robot)
    model, state = load_run(spec.id, run_dir, which)
    out = Path(out) if out else expert_path(spec.id)
    steps, wall = state["steps"], state["wall_seconds"]
    if which == "best":  # the run's wall time when the best policy was evaluated
        steps = state["best_steps"]
        rows = csv.DictReader((run_dir_of(spec.id, run_dir) / CURVE).open())
        wall = next(float(r["wall_seconds"]) for r in rows if int(r["steps"]) == steps)
    return export_onnx(DeterministicActor(model), out, spec, {
        "learner": f"expert_{state['algo']}", "config": state["config"], "seed": state["seed"],
        "train_steps": steps, "wall_seconds": wall, "checkpoint": which,
        "command": state.get("command", ""), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def evaluate(robot: str, policy: str | Path | None = None, episodes: int = 10,
             seed: int = NOMINAL_EVAL_SEED) -> dict:
    """Nominal return of an expert ONNX file over ``episodes`` deterministic episodes, with how it
    was made (from the file's metadata): the JSON committed beside it."""
    from droil_ros.policy.runtime import OnnxPolicy

    spec = locomotion_spec(robot)
    path = Path(policy) if policy else expert_path(spec.id)
    if not path.is_file():
        raise DroilError(f"no expert policy {path}: make it with `droil expert train --robot {spec.id}` "
                         f"then `droil expert export --robot {spec.id}`")
    controller = OnnxPolicy(path, spec)
    env = make_env(spec)
    runs = [run_episode(env, controller, seed + k) for k in range(episodes)]
    result = summarise(runs)
    meta = controller.metadata
    target = TARGETS.get(spec.id)
    return {
        "robot": spec.id, "robot_hash": spec.hash, "policy": path.name, "policy_id": controller.policy_id,
        "return_mean": round(result["return"], 2), "return_std": round(result["return_std"], 2),
        "episodes": episodes, "eval_seeds": [seed, seed + episodes - 1],
        "episode_returns": [round(e.ret, 2) for e in runs], "fall_rate": result["fall_rate"],
        "target": target, "reached_target": None if target is None else result["return"] >= target,
        "algo": str(meta.get("learner", "")).removeprefix("expert_"), "seed": meta.get("seed"),
        "steps_trained": meta.get("train_steps"), "wall_seconds": meta.get("wall_seconds"),
        "checkpoint": meta.get("checkpoint"),
        "command": " && ".join(filter(None, [meta.get("command"), f"droil expert export --robot {spec.id}"])),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_report(result: dict, policy: Path) -> Path:
    path = policy.with_suffix(".json")
    _write_json(path, result)
    return path


def dataset(robot: str, size: int | None = None, expert: str | Path | None = None, seed: int = 0,
            progress: bool = True) -> TransitionDataset:
    """DRBC protocol: the first ``size`` transitions of deterministic expert rollouts from reset
    (seeds seed, seed+1, ...); a cut episode ends in a time-out."""
    spec = locomotion_spec(robot)
    size = size or DATASET_SIZES.get(spec.id)
    if not size or size <= 0:
        raise DroilError(f"robot '{spec.id}' has no protocol dataset size: give --size")
    path = Path(expert) if expert else expert_path(spec.id)
    if not path.is_file():
        raise DroilError(f"no expert policy {path}: make it with `droil expert train --robot {spec.id}` "
                         f"then `droil expert export --robot {spec.id}`")
    steps_per_episode = int(round(spec.task(spec.default_task).seconds * spec.control_rate_hz))
    episodes = math.ceil(size / steps_per_episode)
    while True:
        data = collect(spec.id, str(path), episodes, seed=seed, progress=progress)
        if len(data) >= size:
            break
        episodes *= 2  # the expert fell early: roll out more episodes (the first ones are the same)
    mask = np.arange(len(data)) < size
    out = data.select(mask, source=f"{data.meta['source']} first={size} (DRBC protocol)")
    out.timeouts[-1] = out.timeouts[-1] or not out.terminals[-1]
    return out
