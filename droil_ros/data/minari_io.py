"""Minari interchange: write a transition dataset as a Minari dataset and read one back.

Minari stores episodes (T+1 observations, T actions); we store transitions. The mapping:

- A Minari episode is a run of rows chained s' -> s (bit for bit), so its T+1 observations give
  back ``next_observations`` exactly. A new episode starts at an ``episode_starts`` row, after a
  terminal or timeout, at a gap in the chain (as between bag files), and where ``domain`` or
  ``quality`` change, so those two stay constant per episode.
- ``terminations`` = ``terminals``, ``truncations`` = ``timeouts``. An episode that ends for
  neither reason (a bag cut short, a gap) is marked truncated, so that Minari readers do not
  chain it into anything; we remember that we added the flag.
- Rewards are stored as they are, NaN where the source had none (demonstrations from bags):
  refusing them would make reward-free demonstrations unexportable, and a NaN is an honest
  "unknown" that nobody can mistake for a real reward of 0. ``meta['has_rewards']`` says which.
- What Minari has no field for goes into its metadata, which takes extra keys: our ``meta``
  under the dataset key ``droil``, and per episode ``droil_start`` (the first row is a true
  initial state), ``droil_cut`` (we added the final truncation), ``droil_domain`` and
  ``droil_quality``. A dataset without the ``droil`` key is foreign and needs the robot.

Minari is imported inside the functions, so the rest of the package works without it.
"""

from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from droil_ros.data.dataset import ARRAYS, FORMAT, VERSION, DatasetError, TransitionDataset
from droil_ros.errors import DroilError
from droil_ros.robots.spec import RobotSpec

ROOT_ENV = "MINARI_DATASETS_PATH"
META_KEY = "droil"


def _minari():
    try:
        import h5py  # noqa: F401  (the storage backend: without it Minari cannot store anything)
        import minari
    except ImportError as exc:
        raise DatasetError(f'Minari interchange needs `pip install "minari[hdf5]"` ({exc})') from None
    return minari


@contextmanager
def _datasets_root(root: Path | None):
    """Minari finds datasets through ``MINARI_DATASETS_PATH``, read at every call; point it at
    ``root`` for the call and restore it after (process-wide: not for concurrent threads)."""
    if root is None:
        yield
        return
    old = os.environ.get(ROOT_ENV)
    os.environ[ROOT_ENV] = str(Path(root).expanduser().resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ROOT_ENV, None)
        else:
            os.environ[ROOT_ENV] = old


def _check_id(dataset_id: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: Minari 0.5.4 fails on a missing version
        raise DatasetError(f"bad Minari dataset id '{dataset_id}' (expected namespace/name-v0, "
                           "e.g. droil/wheel_legged-lqr-v0)") from None


def _episode_bounds(ds: TransitionDataset) -> list[tuple[int, int]]:
    """[start, stop) rows of each Minari episode (the rules in the module docstring)."""
    obs = np.ascontiguousarray(ds.observations).view(np.uint32)
    nxt = np.ascontiguousarray(ds.next_observations).view(np.uint32)
    new = np.ones(len(ds), bool)
    new[1:] = (ds.episode_starts[1:] | ds.terminals[:-1] | ds.timeouts[:-1]
               | ~(nxt[:-1] == obs[1:]).all(axis=1)
               | (ds.domain[1:] != ds.domain[:-1]) | (ds.quality[1:] != ds.quality[:-1]))
    starts = np.flatnonzero(new)
    return list(zip(starts.tolist(), [*starts[1:].tolist(), len(ds)], strict=True))


def _spaces(ds: TransitionDataset) -> tuple[object, object, str | None]:
    """(observation space, action space, gymnasium id): the action limits and env id come from
    the robot spec when it loads and is the one the data was recorded with, else unbounded."""
    import gymnasium as gym

    n_obs, n_act = ds.observations.shape[1], ds.actions.shape[1]
    low, high, env_id = np.full(n_act, -np.inf), np.full(n_act, np.inf), None
    try:
        spec = ds.robot_spec() if ds.robot_id else None
    except DroilError:
        spec = None
    if spec is not None and spec.hash == ds.meta.get("robot_hash") and spec.act_dim == n_act:
        low, high, env_id = spec.action_low, spec.action_high, spec.gymnasium_id
    return (gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32),
            gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32), env_id)


def to_minari(dataset: TransitionDataset, dataset_id: str, root: Path | None = None) -> Path:
    """Write ``dataset`` as the Minari dataset ``dataset_id`` (HDF5) under ``root`` (default:
    ``$MINARI_DATASETS_PATH``, else Minari's ``~/.minari/datasets``); returns its folder.
    An existing dataset is never overwritten: bump the version (``-v1``) instead."""
    minari = _minari()
    from minari.data_collector import EpisodeBuffer
    from minari.storage import get_dataset_path

    _check_id(dataset_id)
    dataset.check_shapes()
    if len(dataset) == 0:
        raise DatasetError("dataset is empty: nothing to export")
    buffers, episode_meta = [], []
    for start, stop in _episode_bounds(dataset):
        rows, last = slice(start, stop), stop - 1
        cut = not (dataset.terminals[last] or dataset.timeouts[last])
        truncations = dataset.timeouts[rows].copy()
        truncations[-1] |= cut
        buffers.append(EpisodeBuffer(
            observations=np.concatenate([dataset.observations[rows], dataset.next_observations[last:stop]]),
            actions=dataset.actions[rows], rewards=dataset.rewards[rows],
            terminations=dataset.terminals[rows], truncations=truncations, infos={}))
        episode_meta.append({"droil_start": bool(dataset.episode_starts[start]), "droil_cut": cut,
                             "droil_domain": int(dataset.domain[start]),
                             "droil_quality": int(dataset.quality[start])})
    obs_space, act_space, env_id = _spaces(dataset)
    with _datasets_root(root):
        path = get_dataset_path(dataset_id)
        if path.exists():
            raise DatasetError(f"Minari dataset '{dataset_id}' already exists at {path} "
                               "(use a new version, e.g. -v1)")
        try:
            with warnings.catch_warnings():  # Minari nags about author e-mail, permalink, eval env
                warnings.simplefilter("ignore", UserWarning)
                created = minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=env_id, observation_space=obs_space,
                    action_space=act_space, algorithm_name=dataset.meta.get("source", ""),
                    author="droil_ros", data_format="hdf5",
                    description=(f"droil_ros transitions of robot '{dataset.robot_id}'. Rewards are "
                                 "NaN where the source had none; the 'droil' metadata restores the "
                                 "droil_ros dataset exactly."))
            created.storage.update_metadata({META_KEY: dataset.meta})
            created.storage.update_episode_metadata(episode_meta)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # never leave half a dataset behind
            raise
    return path


def from_minari(dataset_id: str, root: Path | None = None,
                robot: RobotSpec | None = None) -> TransitionDataset:
    """Read the Minari dataset ``dataset_id`` from ``root`` (no download). A droil_ros export
    comes back exactly (checked against ``robot`` if given); a foreign dataset needs ``robot``,
    whose dims must match, and comes back as target-domain, expert-tagged data (retag it with
    ``with_tags``), each Minari episode starting at a true initial state."""
    minari = _minari()
    _check_id(dataset_id)
    with _datasets_root(root):
        try:
            source = minari.load_dataset(dataset_id)
        except FileNotFoundError:
            raise DatasetError(f"no Minari dataset '{dataset_id}' under "
                               f"{os.environ.get(ROOT_ENV, '~/.minari/datasets')}") from None
        except (ValueError, KeyError, OSError) as exc:
            raise DatasetError(f"cannot read Minari dataset '{dataset_id}' "
                               f"({exc.__class__.__name__}: {exc})") from None
    episodes = list(source.iterate_episodes())
    if not episodes:
        raise DatasetError(f"Minari dataset '{dataset_id}' has no episodes")
    for ep in episodes:
        if not (isinstance(ep.observations, np.ndarray) and ep.observations.ndim == 2
                and isinstance(ep.actions, np.ndarray) and ep.actions.ndim == 2):
            raise DatasetError(f"Minari dataset '{dataset_id}': only flat Box observations and "
                               "actions can become transitions")
    data = {
        "observations": np.concatenate([ep.observations[:-1] for ep in episodes]),
        "next_observations": np.concatenate([ep.observations[1:] for ep in episodes]),
        "actions": np.concatenate([ep.actions for ep in episodes]),
        "rewards": np.concatenate([ep.rewards for ep in episodes]),
        "terminals": np.concatenate([ep.terminations for ep in episodes]),
        "timeouts": np.concatenate([ep.truncations for ep in episodes]),
    }
    lengths = [len(ep.actions) for ep in episodes]
    starts = np.cumsum([0, *lengths[:-1]])
    meta = source.storage.metadata.get(META_KEY)
    if meta is None:
        return _foreign(dataset_id, data, starts, robot)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DatasetError(f"Minari dataset '{dataset_id}': unsupported droil format "
                           f"{meta.get('format')} v{meta.get('version')}")
    extra = list(source.storage.get_episode_metadata(source.episode_indices))
    if not all({"droil_start", "droil_cut", "droil_domain", "droil_quality"} <= e.keys() for e in extra):
        raise DatasetError(f"Minari dataset '{dataset_id}' has droil metadata but episodes without "
                           "their droil_* attributes (edited or combined outside droil_ros?)")
    data["episode_starts"] = np.zeros(len(data["actions"]), bool)
    data["episode_starts"][starts] = [e["droil_start"] for e in extra]
    data["timeouts"][starts + np.array(lengths) - 1] &= ~np.array([bool(e["droil_cut"]) for e in extra])
    data["domain"] = np.repeat([e["droil_domain"] for e in extra], lengths)
    data["quality"] = np.repeat([e["droil_quality"] for e in extra], lengths)
    dataset = TransitionDataset(**{k: np.asarray(data[k], dtype) for k, dtype in ARRAYS.items()},
                                meta=meta)
    dataset.check_shapes()
    if robot is not None:
        dataset.check_robot(robot)
    return dataset


def _foreign(dataset_id: str, data: dict, starts: np.ndarray, robot: RobotSpec | None):
    if robot is None:
        raise DatasetError(f"Minari dataset '{dataset_id}' was not written by droil_ros: "
                           "pass the robot it was recorded on")
    dims = data["observations"].shape[1], data["actions"].shape[1]
    if dims != (robot.obs_dim, robot.act_dim):
        raise DatasetError(f"Minari dataset '{dataset_id}' has obs/action dims {dims[0]}/{dims[1]}, "
                           f"robot '{robot.id}' has {robot.obs_dim}/{robot.act_dim}")
    data["episode_starts"] = np.isin(np.arange(len(data["actions"])), starts)
    return TransitionDataset.from_arrays(robot, f"minari {dataset_id}", **data)
