"""Policies as self-contained ONNX files: exported once by a learner, served by ONNX Runtime.

The file carries the robot id, spec hash, observation/action layout and limits, so a policy
node can refuse a policy built for another robot before it ever commands a motor.
"""

from droil_ros.policy.runtime import OnnxPolicy, PolicyError

__all__ = ["OnnxPolicy", "PolicyError", "export_onnx"]


def __getattr__(name):
    """``export_onnx`` on first use: serving a policy must not import torch (3 s, memory)."""
    if name == "export_onnx":
        from droil_ros.policy.export import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
