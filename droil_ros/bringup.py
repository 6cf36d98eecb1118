"""Bringup files (``config/bringup/<name>.yaml``): which nodes run with which parameters.

The same file feeds ``ros2 launch droil_ros <name>.launch.py`` (through ``launch_description``)
and ``droil bringup <name>``, a process supervisor for machines without ``ros2 launch``: it
starts every enabled node, and stops them all (SIGTERM, then SIGKILL after a grace period) when
it is interrupted or when any node exits on its own, so no node is left running unsupervised.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from droil_ros.errors import DroilError
from droil_ros.resources import data_path

EXECUTABLES = ("sim_bridge", "lqr_expert", "policy", "teleop", "demo_recorder", "trainer")
GRACE = 5.0  # seconds a node gets to shut down cleanly (the policy node sends a last safe command)


@dataclass
class BringupNode:
    executable: str
    parameters: dict = field(default_factory=dict)
    enabled: bool = True

    def ros_args(self) -> list[str]:
        """``--ros-args -p k:=v ...``; empty strings are left to the node's default."""
        args = []
        for key, value in self.parameters.items():
            if value == "":
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        return ["--ros-args", *args] if args else []


def bringup_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return data_path("config", "bringup", f"{name_or_path}.yaml")


def load_bringup(name_or_path: str, overrides: list[str] = ()) -> list[BringupNode]:
    """Nodes of a bringup file with ``node.param:=value`` (or ``node.enabled:=false``) applied."""
    path = bringup_path(name_or_path)
    if not path.is_file():
        available = sorted(p.stem for p in data_path("config", "bringup").glob("*.yaml"))
        raise DroilError(f"unknown bringup '{name_or_path}' (available: {', '.join(available)})")
    try:
        raw = yaml.safe_load(path.read_text())
        nodes = [BringupNode(n["executable"], dict(n.get("parameters") or {}), bool(n.get("enabled", True)))
                 for n in raw["nodes"]]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise DroilError(f"{path}: malformed bringup file ({exc.__class__.__name__}: {exc})") from None
    by_name = {n.executable: n for n in nodes}
    for node in nodes:
        if node.executable not in EXECUTABLES:
            raise DroilError(f"{path}: unknown executable '{node.executable}' ({', '.join(EXECUTABLES)})")
    for item in overrides:
        target, sep, value = item.partition(":=")
        executable, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise DroilError(f"override '{item}' is not of the form node.parameter:=value")
        if executable not in by_name:
            raise DroilError(f"override '{item}': no node '{executable}' in {path.stem}")
        parsed = yaml.safe_load(value) if value else ""
        if key == "enabled":
            by_name[executable].enabled = bool(parsed)
        else:
            by_name[executable].parameters[key] = parsed
    return nodes


def command(node: BringupNode) -> list[str]:
    return [sys.executable, "-m", f"droil_ros.nodes.{node.executable}", *node.ros_args()]


class NodeGroup:
    """Node processes, each in a session of its own (a terminal's Ctrl-C reaches only us), all
    stopped on ``close``: SIGTERM, then SIGKILL after ``GRACE``. Output goes to
    ``log_dir/<executable>.log`` when a folder is given; ``env`` is added to ours; with ``limit``
    (s), ``timeout`` kills a node that outlives it, so that none can outlast a killed parent long."""

    def __init__(self, log_dir: Path | None = None, env: dict[str, str] | None = None,
                 limit: float | None = None):
        self.log_dir, self.env, self.limit = log_dir, env, limit
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, node: BringupNode) -> subprocess.Popen:
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{node.executable}.log", "a")
        limit = ["timeout", "-s", "KILL", str(math.ceil(self.limit))] if self.limit else []
        try:
            proc = subprocess.Popen([*limit, *command(node)], start_new_session=True, stdout=output,
                                    stderr=subprocess.STDOUT if output else None,
                                    env=dict(os.environ, **self.env) if self.env else None)
        finally:
            if output is not None:
                output.close()
        self.procs[node.executable] = proc
        return proc

    def exited(self) -> str:
        """The name of a node that has exited, or ''."""
        return next((name for name, p in self.procs.items() if p.poll() is not None), "")

    def tail(self, name: str, lines: int = 3) -> str:
        """The end of a node's log, on one line ('' without a log folder)."""
        path = self.log_dir / f"{name}.log" if self.log_dir is not None else None
        if path is None or not path.is_file():
            return ""
        return " | ".join(path.read_text().strip().splitlines()[-lines:])

    def check(self, during: str = "") -> None:
        """DroilError naming a node that has exited (``during`` what), with the end of its log."""
        name = self.exited()
        if name:
            raise DroilError(f"{name} node exited{' during ' + during if during else ''} with code "
                             f"{self.procs[name].returncode}: {self.tail(name)}")

    def stop(self, *names: str) -> dict[str, int]:
        """Stop the named nodes (all when none is named); their exit codes."""
        procs = {n: p for n, p in self.procs.items() if not names or n in names}
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for p in procs.values():
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for name in procs:
            del self.procs[name]
        return {name: p.returncode for name, p in procs.items()}

    close = stop

    def __enter__(self) -> NodeGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def supervise(nodes: list[BringupNode], log=print) -> int:
    """Run the enabled nodes until interrupted or until one exits; 0 if all ended cleanly."""
    stopping = False

    def interrupt(signum, frame):
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    with NodeGroup() as group:
        try:
            for node in (n for n in nodes if n.enabled):
                log(f"started {node.executable} (pid {group.start(node).pid})")
            failed = ""
            while not stopping and not failed:
                time.sleep(0.1)
                failed = group.exited()
            if failed:
                log(f"{failed} exited with code {group.procs[failed].returncode}: stopping the others")
            codes = group.stop()
            log("stopped: " + ", ".join(f"{name} {code}" for name, code in codes.items()))
            return 0 if not failed and all(c == 0 for c in codes.values()) else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def launch_description(name: str, overrides: list[str] = ()):
    """The ``launch_ros`` form of a bringup, for ``launch/<name>.launch.py``. Arguments given as
    ``ros2 launch droil_ros NAME.launch.py node.param:=value`` (or ``node.enabled:=false``)
    override the YAML as they do for ``droil bringup``."""
    from launch.actions import OpaqueFunction
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def nodes(context):
        given = [f"{k}:={v}" for k, v in context.launch_configurations.items() if "." in k]
        return [Node(package="droil_ros", executable=n.executable, name=n.executable, output="screen",
                     parameters=[{k: v for k, v in n.parameters.items() if v != ""}])
                for n in load_bringup(name, [*overrides, *given]) if n.enabled]

    return LaunchDescription([OpaqueFunction(function=nodes)])
