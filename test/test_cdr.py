"""The hand CDR decoders read exactly what rclpy's deserialize_message reads, and refuse what it
refuses: random messages, then the same bytes corrupted and cut short."""

import random

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Imu, JointState

from droil_ros.nodes.cdr import Decoder

CHARS = "abxyz_0é漢"


def text(rng: random.Random) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, 9)))


def number(rng: random.Random) -> float:
    return rng.choice([rng.gauss(0.0, 1e3), float("nan"), float("inf"), -0.0])


def joint_state(rng: random.Random) -> JointState:
    m = JointState()
    m.name = [text(rng) for _ in range(rng.randint(0, 5))]
    for field in ("position", "velocity", "effort"):
        setattr(m, field, [number(rng) for _ in range(rng.randint(0, 5))])
    return m


def imu(rng: random.Random) -> Imu:
    m = Imu()
    for vector in (m.orientation, m.angular_velocity, m.linear_acceleration):
        for axis in ("x", "y", "z", "w")[:4 if vector is m.orientation else 3]:
            setattr(vector, axis, number(rng))
    for field in ("orientation_covariance", "angular_velocity_covariance",
                  "linear_acceleration_covariance"):
        setattr(m, field, [number(rng) for _ in range(9)])
    return m


def fields(msg) -> dict:
    """Every field as comparable values (NaN equal to NaN through its bits)."""
    out = {"stamp": (msg.header.stamp.sec, msg.header.stamp.nanosec), "frame": msg.header.frame_id}
    for name in ("name", "position", "velocity", "effort", "orientation_covariance",
                 "angular_velocity_covariance", "linear_acceleration_covariance"):
        if hasattr(msg, name):
            value = getattr(msg, name)
            out[name] = tuple(value) if name == "name" else np.asarray(value, np.float64).tobytes()
    for name in ("orientation", "angular_velocity", "linear_acceleration"):
        if hasattr(msg, name):
            v = getattr(msg, name)
            out[name] = np.array([getattr(v, a) for a in ("x", "y", "z", "w") if hasattr(v, a)]).tobytes()
    return out


def decoded(decode, raw: bytes, kind):
    """(rclpy's fields or None, ours or None): None where the decoder raised."""
    try:
        reference = fields(deserialize_message(raw, kind))
    except Exception:  # rclpy's own error types
        reference = None
    try:
        ours = fields(decode(raw))
    except ValueError:
        ours = None
    return reference, ours


@pytest.mark.parametrize(("kind", "make"), [(JointState, joint_state), (Imu, imu)])
def test_the_decoders_read_what_rclpy_reads(kind, make):
    rng = random.Random(7)
    decoder = Decoder()
    decode = decoder.joint_state if kind is JointState else decoder.imu
    refused = 0
    for _ in range(600):
        msg = make(rng)
        msg.header.stamp.sec = rng.randint(-2**31, 2**31 - 1)
        msg.header.stamp.nanosec = rng.randint(0, 2**32 - 1)
        msg.header.frame_id = text(rng)
        raw = serialize_message(msg)
        reference, ours = decoded(decode, raw, kind)
        assert reference is not None and ours == reference
        corrupt = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            corrupt[rng.randrange(4, len(corrupt))] = rng.randrange(256)
        corrupt = bytes(corrupt[:rng.randint(4, len(corrupt))] if rng.random() < 0.5 else corrupt)
        reference, ours = decoded(decode, corrupt, kind)
        assert ours == reference, corrupt.hex()
        refused += reference is None
    assert refused > 100  # the corruptions reached the error paths


def test_big_endian_bytes_go_to_rclpy():
    msg = joint_state(random.Random(1))
    raw = bytearray(serialize_message(msg))
    raw[1] = 0x00  # CDR_BE: not what Fast DDS sends here, so rclpy reads (or refuses) it
    reference, ours = decoded(Decoder().joint_state, bytes(raw), JointState)
    assert ours == reference
