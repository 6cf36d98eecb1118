"""Offline learners, one module each, behind one registry: config -> create -> fit -> export."""

from __future__ import annotations

from droil_ros.algos.bc import BC
from droil_ros.algos.bc_dyn import BCDyn
from droil_ros.algos.be_droil import BEDROIL, LEGACY
from droil_ros.algos.common import Learner, LearnerConfig
from droil_ros.algos.d2mil import D2MIL
from droil_ros.algos.dmil import DMIL
from droil_ros.algos.drbc import DRBC
from droil_ros.algos.droco import DROCO
from droil_ros.algos.dwbc import DWBC
from droil_ros.algos.iql import IQL
from droil_ros.data.dataset import TransitionDataset
from droil_ros.errors import DroilError
from droil_ros.robots.spec import RobotSpec

ALGOS: dict[str, type[Learner]] = {cls.name: cls for cls in (BC, DRBC, BEDROIL, IQL, DROCO,
                                                             BCDyn, DMIL, DWBC, D2MIL)}
# named variants: a learner with fixed config overrides
VARIANTS: dict[str, tuple[str, dict]] = {"be_droil_nu0": ("be_droil", {"balance": False}),
                                         "be_droil_legacy": ("be_droil", LEGACY),
                                         "drbc_faithful": ("drbc", {"faithful": True}),
                                         "bc_dyn_2phase": ("bc_dyn", {"pretrain_fraction": 0.5})}


def available() -> list[str]:
    return [*ALGOS, *VARIANTS]


def make_config(name: str, preset: str = "paper", **overrides) -> LearnerConfig:
    base, fixed = VARIANTS.get(name, (name, {}))
    if base not in ALGOS:
        raise DroilError(f"unknown learner '{name}' (known: {', '.join(available())})")
    return ALGOS[base].Config.preset(preset, **{**fixed, **overrides})


def create(name: str, dataset: TransitionDataset, robot: RobotSpec, preset: str = "paper",
           seed: int = 0, n_seeds: int = 1, **overrides) -> Learner:
    config = make_config(name, preset, **overrides)
    base = VARIANTS.get(name, (name, {}))[0]
    learner = ALGOS[base](config, dataset, robot, seed=seed, n_seeds=n_seeds)
    learner.name = name
    return learner


__all__ = ["ALGOS", "Learner", "LearnerConfig", "available", "create", "make_config"]
