"""Load and run an exported policy with ONNX Runtime, refusing files meant for another robot."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from droil_ros.errors import DroilError
from droil_ros.robots import RobotSpec
from droil_ros.robots.spec import columns


class PolicyError(DroilError):
    """A policy file is missing, corrupt, not a droil policy, or made for another robot."""


class PolicyOutputError(PolicyError):
    """The policy answered NaN or Inf: a broken policy, which a node must count as a fault."""


def _decode(value: str):
    """Inverse of the exporter's encoding: JSON where it parses, the plain string otherwise."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _session_options() -> ort.SessionOptions:
    """One thread, no spinning: a policy node shares its core with the ROS executor, and a
    single observation is too small for threading to pay off (about 10 µs per call)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; we report failures ourselves
    return options


class OnnxPolicy:
    """A droil ONNX policy: raw observation in, clipped finite action (robot units) out."""

    def __init__(self, path: str | os.PathLike, robot: RobotSpec | None = None, data: bytes | None = None):
        """``data``: the file's bytes, already read (and vetted) by the caller; ``path`` then only
        names the policy, so what runs is what was checked even if the file changes meanwhile."""
        self._path = Path(path)
        self._robot = robot
        self._seen: np.ndarray | None = None  # the policy's observation within the robot's, if a subset
        if data is None:
            data = self._read()
        self._policy_id = f"{self._path.stem}-{hashlib.sha256(data).hexdigest()[:8]}"
        try:
            self._session = ort.InferenceSession(data, _session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own pybind types for corrupt or truncated files
            raise PolicyError(f"{self._path}: not a valid ONNX model ({type(exc).__name__})") from None

        raw = self._session.get_modelmeta().custom_metadata_map
        if "robot_id" not in raw:
            raise PolicyError(f"{self._path}: not a droil policy: no robot_id in metadata")
        self._metadata = {key: _decode(value) for key, value in raw.items()}
        try:
            self._robot_id = str(self._metadata["robot_id"])
            self._robot_hash = str(self._metadata["robot_hash"])
            self._obs_names = [str(n) for n in self._metadata["obs_names"]]
            self._action_names = [str(n) for n in self._metadata["action_names"]]
            self._low = np.array(self._metadata["action_low"], dtype=np.float64)
            self._high = np.array(self._metadata["action_high"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"{self._path}: malformed droil metadata "
                              f"({type(exc).__name__}: {exc})") from None
        if self._low.shape != (self.act_dim,) or self._high.shape != (self.act_dim,):
            raise PolicyError(f"{self._path}: malformed droil metadata (action limits do not match "
                              f"{self.act_dim} action names)")
        self._low_values, self._high_values = self._low.tolist(), self._high.tolist()
        self._called_shape = (len(self._obs_names),)  # act's observation (the robot's, for a subset)
        self._check_graph()
        self._input = self._session.get_inputs()[0].name
        self._outputs = [self._session.get_outputs()[0].name]
        # one observation per call (a control loop): buffers bound to the session once
        self._one_in = np.zeros((1, len(self._obs_names)), np.float32)
        self._one_out = np.zeros((1, self.act_dim), np.float32)
        self._binding = self._session.io_binding()
        self._binding.bind_cpu_input(self._input, self._one_in)
        self._binding.bind_output(self._outputs[0], "cpu", 0, np.float32, self._one_out.shape,
                                  self._one_out.ctypes.data)
        if robot is not None:
            self.validate_against(robot)

    def _read(self) -> bytes:
        try:
            if not self._path.is_file():
                raise PolicyError(f"policy file not found: {self._path}")
            return self._path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"{self._path}: cannot read policy ({exc.strerror})") from None

    def _check_graph(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise PolicyError(f"{self._path}: expected one input and one output, "
                              f"model has {len(inputs)} and {len(outputs)}")
        for arg, dim in ((inputs[0], len(self._obs_names)), (outputs[0], self.act_dim)):
            if arg.type != "tensor(float)" or len(arg.shape) != 2 or arg.shape[1] != dim:
                raise PolicyError(f"{self._path}: model {arg.name} is {arg.type} {arg.shape}, "
                                  f"metadata says float (batch, {dim})")

    def validate_against(self, robot: RobotSpec) -> None:
        """Raise PolicyError unless this policy was trained for exactly this robot spec. A policy
        of a task that sees a subset of the observation (``RobotSpec.task_spec``) then takes the
        robot's whole observation and picks its elements by name.

        Names are compared before the hash because they say *what* changed; the hash then
        catches everything else (limits, scales, model) that names cannot show.
        """
        if self._robot_id != robot.id:
            raise PolicyError(f"{self._path}: policy is for robot '{self._robot_id}', this is '{robot.id}'")
        whole = list(robot.obs_names)
        if self._obs_names != whole and set(self._obs_names) <= set(whole):
            self._seen = np.array(columns(self._obs_names, whole))
            self._called_shape = (len(whole),)
            whole = self._obs_names
        for what, ours, theirs in (("observation", self._obs_names, whole),
                                   ("action", self._action_names, robot.action_names)):
            if ours != list(theirs):
                raise PolicyError(f"{self._path}: {what} names differ from robot spec '{robot.id}' "
                                  f"(policy {ours}, spec {list(theirs)})")
        if self._robot_hash != robot.hash:
            raise PolicyError(f"{self._path}: policy was trained for a different version of robot spec "
                              f"'{robot.id}' (hash {self._robot_hash}, expected {robot.hash})")

    def __call__(self, obs, strict: bool = False) -> np.ndarray:
        """Action(s) for obs of shape (obs_dim,) or (B, obs_dim): float64, within limits, never NaN.
        A NaN or Inf output becomes 0, or with ``strict`` raises PolicyOutputError."""
        action = self.raw(obs)
        finite = np.isfinite(action)
        if not finite.all():
            if strict:
                raise PolicyOutputError(f"{self._path}: policy output is NaN or Inf")
            action[~finite] = 0.0  # the safe action, as RobotSpec.clip_action
        np.minimum(np.maximum(action, self._low, out=action), self._high, out=action)  # faster than np.clip
        return action[0] if np.ndim(obs) == 1 else action

    def act(self, obs: np.ndarray, strict: bool = False) -> np.ndarray:
        """``self(obs)`` for one observation of shape (obs_dim,), the control loop's call: the
        session runs on buffers bound to it once (ONNX Runtime's IOBinding), so nothing is
        allocated but the returned action. One caller at a time per policy."""
        if getattr(obs, "shape", None) != self._called_shape:  # an array's shape costs least to read
            if np.shape(obs) != self._called_shape:
                raise PolicyError(f"{self._path}: observation has shape {np.shape(obs)}, policy expects "
                                  f"({self.obs_dim},)")
            obs = np.asarray(obs, np.float64)
        self._one_in[0] = obs if self._seen is None else obs[self._seen]
        self._session.run_with_iobinding(self._binding)
        # a handful of numbers: Python floats cost less than numpy's per-call overhead here
        action = self._one_out[0].tolist()
        for k, (value, low, high) in enumerate(zip(action, self._low_values, self._high_values, strict=True)):
            if not math.isfinite(value):
                if strict:
                    raise PolicyOutputError(f"{self._path}: policy output is NaN or Inf")
                value = 0.0  # the safe action, as in __call__
            action[k] = low if value < low else high if value > high else value
        return np.array(action)

    def raw(self, obs) -> np.ndarray:
        """The model's output as it is (float64, shape (B, act_dim)): no clipping, NaN kept."""
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] != self.obs_dim:
            raise PolicyError(f"{self._path}: observation has shape {x.shape}, policy expects "
                              f"({self.obs_dim},) or (batch, {self.obs_dim})")
        if single:
            x = x.reshape(1, -1)
        if self._seen is not None:
            x = x[:, self._seen]
        return self._session.run(self._outputs, {self._input: np.ascontiguousarray(x)})[0].astype(np.float64)

    def __reduce__(self):
        """Pickle by path (an ORT session cannot be pickled): evaluation workers reload it."""
        return (OnnxPolicy, (self._path, self._robot))

    @property
    def path(self) -> Path:
        return self._path

    @property
    def metadata(self) -> dict:
        """All metadata, JSON-decoded where possible (a copy: callers may modify it)."""
        return dict(self._metadata)

    @property
    def robot_id(self) -> str:
        return self._robot_id

    @property
    def obs_dim(self) -> int:
        """The length of the observation it is called with (the robot's, when it picks a subset)."""
        return self._called_shape[0]

    @property
    def act_dim(self) -> int:
        return len(self._action_names)

    @property
    def policy_id(self) -> str:
        """File stem plus the first 8 hex digits of the file's sha256: stable across copies and
        renames of the directory, different for every re-export."""
        return self._policy_id
