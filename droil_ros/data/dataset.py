"""Transition datasets: the one format every learner reads.

File format (``.npz``, written by numpy, read with ``allow_pickle=False``):

==================  ===========  ==========================================================
array               shape/dtype  meaning
==================  ===========  ==========================================================
observations        (N, O) f32   s, built through the robot spec
actions             (N, A) f32   a, in the robot's units (as commanded)
next_observations   (N, O) f32   s'
rewards             (N,) f32     task reward (NaN where the source had none)
terminals           (N,) bool    s' ends the episode for real (a fall): no bootstrap
timeouts            (N,) bool    the episode was cut by a time limit after this step
episode_starts      (N,) bool    s is a true initial state of an episode
domain              (N,) u1      index into ``DOMAINS`` (target = the robot we deploy on)
quality             (N,) u1      index into ``QUALITIES``
meta                () str       JSON: format, version, robot_id, robot_hash, obs_names,
                                 action_names, control_rate_hz, source, has_rewards,
                                 robot_spec (the spec's YAML text), robot_spec_file (its path)
==================  ===========  ==========================================================

``robot_spec`` and ``robot_spec_file`` came later (same version): a file without them is still
read, and its robot is found by id on the search path.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from droil_ros.errors import DroilError, SpecError
from droil_ros.robots.spec import RobotSpec, columns, load_spec, parse_spec

FORMAT = "droil-transitions"
VERSION = 1
DOMAINS = ("target", "source")
QUALITIES = ("expert", "other")
ARRAYS = {
    "observations": np.float32, "actions": np.float32, "next_observations": np.float32,
    "rewards": np.float32, "terminals": np.bool_, "timeouts": np.bool_,
    "episode_starts": np.bool_, "domain": np.uint8, "quality": np.uint8,
}


class DatasetError(DroilError):
    """A dataset is missing, malformed, or does not fit the robot or the learner."""


@dataclass
class TransitionDataset:
    observations: np.ndarray
    actions: np.ndarray
    next_observations: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    episode_starts: np.ndarray
    domain: np.ndarray
    quality: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def robot_id(self) -> str:
        return self.meta.get("robot_id", "")

    @property
    def initial_observations(self) -> np.ndarray:
        return self.observations[self.episode_starts]

    @property
    def n_episodes(self) -> int:
        return int(self.episode_starts.sum())

    @property
    def hash(self) -> str:
        digest = hashlib.sha256()
        for name in ARRAYS:
            digest.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        digest.update(self.robot_id.encode())
        return digest.hexdigest()[:16]

    @classmethod
    def from_arrays(cls, robot: RobotSpec, source: str, **arrays) -> TransitionDataset:
        """Build from arrays; optional ones default to no reward, target domain, expert data."""
        n = len(arrays["observations"])
        defaults = {
            "rewards": np.full(n, np.nan), "terminals": np.zeros(n, bool),
            "timeouts": np.zeros(n, bool), "episode_starts": np.zeros(n, bool),
            "domain": np.zeros(n, np.uint8), "quality": np.zeros(n, np.uint8),
        }
        data = {name: np.asarray(arrays.get(name, defaults.get(name)), dtype=dtype)
                for name, dtype in ARRAYS.items()}
        meta = {
            "format": FORMAT, "version": VERSION, "robot_id": robot.id, "robot_hash": robot.hash,
            "obs_names": robot.obs_names, "action_names": robot.action_names,
            "control_rate_hz": robot.control_rate_hz, "source": source,
            "has_rewards": bool(np.isfinite(data["rewards"]).any()),
            "robot_spec": robot.text, "robot_spec_file": str(robot.source),
        }
        dataset = cls(**data, meta=meta)
        dataset.check_shapes()
        return dataset

    def check_shapes(self) -> None:
        n = len(self.observations)
        if self.observations.ndim != 2 or self.actions.ndim != 2:
            raise DatasetError("observations and actions must be 2-D arrays")
        if self.next_observations.shape != self.observations.shape:
            raise DatasetError(f"next_observations {self.next_observations.shape} do not match "
                               f"observations {self.observations.shape}")
        for name in ARRAYS:
            if len(getattr(self, name)) != n:
                raise DatasetError(f"'{name}' has {len(getattr(self, name))} rows, expected {n}")
        if self.domain.size and self.domain.max(initial=0) >= len(DOMAINS):
            raise DatasetError("domain codes out of range")
        if self.quality.size and self.quality.max(initial=0) >= len(QUALITIES):
            raise DatasetError("quality codes out of range")

    def robot_spec(self) -> RobotSpec:
        """The spec the data was made with: the copy the file carries (a user's robot trains
        anywhere), else, for files older than that, the spec of its id on the search path."""
        text = self.meta.get("robot_spec")
        if not text:
            return self.spec_for(load_spec(self.robot_id))
        where = f"spec of robot '{self.robot_id}' in the dataset"
        spec = parse_spec(text, Path(self.meta.get("robot_spec_file", "")), where, check_model=False)
        if spec.id != self.robot_id or spec.hash != self.meta.get("robot_hash"):
            raise DatasetError(f"the dataset's spec is robot '{spec.id}' hash {spec.hash}, its meta says "
                               f"'{self.robot_id}' hash {self.meta.get('robot_hash')}: the file was edited")
        return self.spec_for(spec)

    def spec_for(self, robot: RobotSpec) -> RobotSpec:
        """``robot`` as this dataset observes it: a task's subset of its observation (the names
        the dataset carries), or the whole; a one-line DatasetError for names it does not have."""
        names = self.meta.get("obs_names")
        if not names or not robot.observation:
            return robot
        try:
            return robot.with_observation(names)
        except SpecError as exc:
            raise DatasetError(str(exc)) from None

    def observe(self, robot: RobotSpec) -> TransitionDataset:
        """The same transitions seen through ``robot``'s observation (``RobotSpec.task_spec``):
        the columns of its names, in its order."""
        have = self.meta["obs_names"]
        if robot.obs_names == have:
            return self
        try:
            picked = columns(robot.obs_names, have)
        except ValueError as exc:
            raise DatasetError(f"dataset has {exc}") from None
        return replace(self, observations=self.observations[:, picked],
                       next_observations=self.next_observations[:, picked],
                       meta=dict(self.meta, obs_names=robot.obs_names))

    def check_robot(self, robot: RobotSpec) -> None:
        """The dataset must come from this robot: id, dims, names and spec version agree."""
        if self.robot_id != robot.id:
            raise DatasetError(f"dataset is for robot '{self.robot_id}', not '{robot.id}'")
        if self.observations.shape[1] != robot.obs_dim or self.actions.shape[1] != robot.act_dim:
            raise DatasetError(
                f"dataset has obs/action dims {self.observations.shape[1]}/{self.actions.shape[1]}, "
                f"robot '{robot.id}' has {robot.obs_dim}/{robot.act_dim}")
        if self.meta.get("obs_names") != robot.obs_names:
            raise DatasetError(f"dataset observation names differ from robot '{robot.id}'")
        made_with = self.meta.get("robot_hash")
        if made_with and made_with != robot.hash:
            file = self.meta.get("robot_spec_file")
            raise DatasetError(
                f"dataset was made with robot '{self.robot_id}' hash {made_with}"
                + (f" ({file})" if file else "") + f", not '{robot.id}' hash {robot.hash} "
                f"({robot.source}): another version of the spec")

    def check_trainable(self, robot: RobotSpec, need_rewards: bool = False) -> None:
        """Everything a learner needs, each failure a one-line reason."""
        if len(self) == 0:
            raise DatasetError("dataset is empty")
        self.check_robot(robot)
        for name in ("observations", "actions", "next_observations"):
            bad = ~np.isfinite(getattr(self, name)).all(axis=1)
            if bad.any():
                rows = np.flatnonzero(bad)
                raise DatasetError(f"dataset has NaN/Inf in {name} ({len(rows)} rows, first {rows[0]})")
        if np.ptp(self.actions, axis=0).max() == 0.0:
            raise DatasetError("every action in the dataset is the same: nothing to imitate")
        if need_rewards and not np.isfinite(self.rewards).all():
            raise DatasetError("this learner needs rewards and the dataset has none (or NaN)")

    def select(self, mask: np.ndarray, source: str | None = None) -> TransitionDataset:
        data = {name: getattr(self, name)[mask] for name in ARRAYS}
        meta = dict(self.meta, source=source or self.meta.get("source", ""))
        return TransitionDataset(**data, meta=meta)

    def with_tags(self, domain: str | None = None, quality: str | None = None) -> TransitionDataset:
        out = replace(self, meta=dict(self.meta))
        if domain is not None:
            out.domain = np.full(len(self), DOMAINS.index(domain), np.uint8)
        if quality is not None:
            out.quality = np.full(len(self), QUALITIES.index(quality), np.uint8)
        return out

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename): a reader never sees half a dataset."""
        path = Path(path)
        if path.suffix != ".npz":
            raise DatasetError(f"dataset files end in .npz: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(self.meta)),
                         **{name: getattr(self, name) for name in ARRAYS})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


def concatenate(parts: list[TransitionDataset], source: str) -> TransitionDataset:
    if not parts:
        raise DatasetError("nothing to concatenate")
    robots = {p.robot_id for p in parts}
    if len(robots) > 1:
        raise DatasetError(f"cannot mix datasets of robots {sorted(robots)}")
    versions = {p.meta.get("robot_hash") for p in parts}
    if len(versions) > 1:
        raise DatasetError(f"cannot mix datasets of robot '{parts[0].robot_id}' made with different "
                           f"versions of its spec (hashes {', '.join(sorted(map(str, versions)))})")
    data = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ARRAYS}
    meta = dict(parts[0].meta, source=source,
                has_rewards=bool(np.isfinite(data["rewards"]).any()))
    return TransitionDataset(**data, meta=meta)


def load_dataset(path: str | Path, robot: RobotSpec | None = None) -> TransitionDataset:
    """Load and schema-check a dataset file; with ``robot``, also check it belongs to it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in (*ARRAYS, "meta") if k not in archive.files]
            if missing:
                raise DatasetError(f"{path}: not a droil dataset (missing {', '.join(missing)})")
            meta = json.loads(str(archive["meta"]))
            data = {name: archive[name] for name in ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read dataset ({exc.__class__.__name__}: {exc})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DatasetError(f"{path}: unsupported format {meta.get('format')} v{meta.get('version')}")
    for name, dtype in ARRAYS.items():
        if data[name].dtype != dtype:
            raise DatasetError(f"{path}: '{name}' has dtype {data[name].dtype}, expected "
                               f"{np.dtype(dtype)}")
    dataset = TransitionDataset(**data, meta=meta)
    dataset.check_shapes()
    if robot is not None:
        dataset.check_robot(robot)
    return dataset
