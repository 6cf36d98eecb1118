"""Decoders for the two messages of every control tick, JointState and Imu, straight from their
CDR bytes.

rclpy's ``deserialize_message`` builds a full Python message (every field an object, every
sequence a list) and costs 10-20 us per message here, the largest part of an event-driven tick;
these read the little-endian CDR (XCDR1, what Fast DDS and Cyclone DDS send for ROS 2) with
``struct`` and ``numpy.frombuffer`` into read-only views with the same field names, and keep the
decoded joint names of each distinct name block (a driver sends the same names every cycle). Any
other encoding goes to rclpy. Both read what rclpy reads (strings up to a NUL, invalid UTF-8
replaced); malformed bytes raise ValueError where rclpy's decoder raises.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Imu, JointState

CDR_LE = b"\x00\x01"  # representation identifier of little-endian plain CDR
_IMU_DOUBLES = 4 + 9 + 3 + 9 + 3 + 9  # orientation, its covariance, angular velocity, ..., each covariance
_NAME_CACHE_SIZE = 16


class Stamp(NamedTuple):
    sec: int
    nanosec: int


class Header(NamedTuple):
    stamp: Stamp
    frame_id: str


class Vector3(NamedTuple):
    x: float
    y: float
    z: float


class Quaternion(NamedTuple):
    x: float
    y: float
    z: float
    w: float


class JointStateView(NamedTuple):
    header: Header
    name: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class ImuView(NamedTuple):
    header: Header
    orientation: Quaternion
    orientation_covariance: np.ndarray
    angular_velocity: Vector3
    angular_velocity_covariance: np.ndarray
    linear_acceleration: Vector3
    linear_acceleration_covariance: np.ndarray


_HEAD = struct.Struct("<iII")  # stamp (sec, nanosec), then the frame_id's length
_U32 = struct.Struct("<I").unpack_from


def _header(raw: bytes) -> tuple[Header, int]:
    """The header and the offset after it (offsets count from the start of ``raw``; the 4-byte
    encapsulation keeps CDR's alignment, which counts from its end, the same modulo 4)."""
    sec, nanosec, n = _HEAD.unpack_from(raw, 4)
    frame, at = _string(raw, 16, n)
    return Header(Stamp(sec, nanosec), frame.decode(errors="replace")), at


def _string(raw: bytes, at: int, n: int) -> tuple[bytes, int]:
    """The ``n`` bytes of a CDR string at ``at`` up to a NUL (a C string, as rclpy reads it)."""
    end = at + n
    if end > len(raw):
        raise ValueError(f"string of {n} bytes past the end of the message")
    nul = raw.find(b"\0", at, end)
    return raw[at:end if nul < 0 else nul], end


def _doubles(raw: bytes, at: int, n: int) -> tuple[np.ndarray, int]:
    if n:
        at += -(at - 4) % 8
    return np.frombuffer(raw, "<f8", n, at), at + 8 * n  # ValueError past the end


class Decoder:
    """Decodes JointState and Imu bytes; one per node (it caches joint-name blocks)."""

    def __init__(self):
        self.names: dict[bytes, tuple[str, ...]] = {}

    def joint_state(self, raw: bytes) -> JointStateView | JointState:
        if raw[:2] != CDR_LE:
            return _rclpy(raw, JointState)
        try:
            return self._joint_state(raw)
        except struct.error as exc:
            raise ValueError(f"JointState ends early ({exc})") from None

    def _joint_state(self, raw: bytes) -> JointStateView:
        header, at = _header(raw)
        at += -at % 4
        start = at
        (count,), at = _U32(raw, at), at + 4
        parts = []
        for _ in range(count):  # each name takes 4 bytes at least: bounded by the message's size
            at += -at % 4
            name, at = _string(raw, at + 4, _U32(raw, at)[0])
            parts.append(name)
        block = raw[start:at]
        names = self.names.get(block)
        if names is None:
            names = tuple(name.decode(errors="replace") for name in parts)
            if len(self.names) >= _NAME_CACHE_SIZE:
                self.names.clear()
            self.names[block] = names
        sequences = []
        for _ in range(3):  # position, velocity, effort
            at += -at % 4
            values, at = _doubles(raw, at + 4, _U32(raw, at)[0])
            sequences.append(values)
        return JointStateView(header, names, *sequences)

    @staticmethod
    def imu(raw: bytes) -> ImuView | Imu:
        if raw[:2] != CDR_LE:
            return _rclpy(raw, Imu)
        try:
            header, at = _header(raw)
        except struct.error as exc:
            raise ValueError(f"Imu ends early ({exc})") from None
        d, _ = _doubles(raw, at, _IMU_DOUBLES)
        return ImuView(header, Quaternion(*d[0:4].tolist()), d[4:13], Vector3(*d[13:16].tolist()),
                       d[16:25], Vector3(*d[25:28].tolist()), d[28:37])


def _rclpy(raw: bytes, kind):
    try:
        return deserialize_message(raw, kind)
    except Exception as exc:  # rclpy's own error types
        raise ValueError(f"rclpy: {type(exc).__name__}") from None
