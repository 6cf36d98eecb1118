"""Export a torch policy to one self-contained ONNX file with droil metadata."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch

import droil_ros
from droil_ros.robots import RobotSpec

FORMAT_VERSION = 1


def encode_metadata_value(value) -> str:
    """Strings stay readable as-is; everything else (and strings that would parse as JSON) is JSON.

    The runtime JSON-decodes a value whenever it can, so quoting a string like ``"1234"`` keeps
    it a string on the way back instead of turning into a number.
    """
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)


def export_onnx(module: torch.nn.Module, path: str | os.PathLike, robot: RobotSpec, metadata: dict) -> Path:
    """Write ``module`` (raw obs (B, obs_dim) -> actions (B, act_dim) in robot units) to ``path``.

    The module must already contain normalisation, scaling and clipping: the file is all a
    policy node needs. The file appears atomically, so a node hot-swapping on file change never
    reads a half-written policy.
    """
    path = Path(path)
    example = torch.zeros(2, robot.obs_dim)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out_shape = tuple(module(example).shape)
            if out_shape != (2, robot.act_dim):
                raise ValueError(f"policy module maps (2, {robot.obs_dim}) to {out_shape}, "
                                 f"expected (2, {robot.act_dim}) for robot '{robot.id}'")
            program = _quiet_export(module, example)
    finally:
        module.train(was_training)

    props = {
        "robot_id": robot.id,
        "robot_hash": robot.hash,
        "robot_spec": robot.text,  # the whole spec: a user's robot is known wherever the file goes
        "obs_names": list(robot.obs_names),
        "action_names": list(robot.action_names),
        "action_low": robot.action_low.tolist(),
        "action_high": robot.action_high.tolist(),
        "control_rate_hz": robot.control_rate_hz,
        "droil_version": droil_ros.__version__,
        "format_version": FORMAT_VERSION,
        **metadata,
    }
    program.model.metadata_props.update({k: encode_metadata_value(v) for k, v in props.items()})

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _quiet_export(module: torch.nn.Module, example: torch.Tensor) -> torch.onnx.ONNXProgram:
    """Dynamo export with a dynamic batch; silences its progress log and harmless warnings
    ('torchvision is not installed', a LeafSpec FutureWarning) that would clutter the CLI."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                module, (example,), dynamo=True, verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                input_names=["obs"], output_names=["action"],
            )
    finally:
        onnx_logger.setLevel(level)
