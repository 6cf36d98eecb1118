"""Bringup files (``config/bringup/<name>.yaml``): which nodes run with which parameters.

The same file feeds ``ros2 launch droil_ros <name>.launch.py`` (through ``launch_description``)
and ``droil bringup <name>``, a process supervisor for machines without ``ros2 launch``: it
starts every enabled node, and stops them all (SIGTERM, then SIGKILL after a grace period) when
it is interrupted or when a required node (all are, unless the file says ``required: false``)
exits on its own, so no node is left running unsupervised. Everything a launch file decides
(arguments, overrides and their validation, which nodes, which are required) is decided here,
so the launch files stay three lines and this logic is tested without ``launch``.
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

EXECUTABLES = ("sim_bridge", "lqr_expert", "human_demo", "policy", "teleop", "demo_recorder", "trainer")
# seconds a node gets to shut down cleanly (the policy node sends a last safe command): ros2 launch's
# sigterm_timeout + sigkill_timeout; 5 s was too short for a node on a heavily loaded machine
GRACE = 10.0


GLOBAL_ARGUMENTS = {  # launch arguments that apply to every node of a bringup: name -> description
    "namespace": "ROS namespace of every node, e.g. robot1 (empty: the root namespace)",
    "use_sim_time": "true: every node follows /clock (sim_bridge publishes it); false: wall "
                    "clock; empty: as the bringup file says",
    "robot": "robot spec (id under config/robots/ or a YAML path) of every node that takes one "
             "(empty: as the bringup file says)",
    "policy_path": "ONNX policy the policy node loads at start (empty: as the bringup file says)",
}
BOOLEANS = ("true", "false")
SHARE = "$(share)"


@dataclass
class BringupNode:
    executable: str
    parameters: dict = field(default_factory=dict)
    enabled: bool = True
    required: bool = True  # when it exits, the whole bringup stops
    namespace: str = ""

    def ros_args(self) -> list[str]:
        """``--ros-args -r __ns:=/ns -p k:=v ...``; empty strings are left to the node's default."""
        args = ["-r", f"__ns:=/{self.namespace.strip('/')}"] if self.namespace.strip("/") else []
        for key, value in self.parameters.items():
            if value == "":
                continue
            args += ["-p", f"{key}:={_text(value)}"]
        return ["--ros-args", *args] if args else []


@dataclass
class LaunchArgument:
    """A declared launch argument (``ros2 launch ... --show-args`` lists them)."""
    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def bringup_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    return data_path("config", "bringup", f"{name_or_path}.yaml")


def read_bringup(name_or_path: str) -> list[BringupNode]:
    """The nodes of a bringup file as written."""
    path = bringup_path(name_or_path)
    if not path.is_file():
        available = sorted(p.stem for p in data_path("config", "bringup").glob("*.yaml"))
        raise DroilError(f"unknown bringup '{name_or_path}' (available: {', '.join(available)})")
    try:
        raw = yaml.safe_load(path.read_text())
        nodes = [BringupNode(n["executable"], _parameters(n),
                             bool(n.get("enabled", True)), bool(n.get("required", True)))
                 for n in raw["nodes"]]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise DroilError(f"{path}: malformed bringup file ({exc.__class__.__name__}: {exc})") from None
    for node in nodes:
        if node.executable not in EXECUTABLES:
            raise DroilError(f"{path}: unknown executable '{node.executable}' ({', '.join(EXECUTABLES)})")
    return nodes


def _in_share(value):
    """``$(share)`` in a bringup file: where the package's data is installed (as launch's
    ``$(find-pkg-share droil_ros)``)."""
    return value.replace(SHARE, str(data_path())) if isinstance(value, str) else value


def _parameters(entry: dict) -> dict:
    return {key: _in_share(value) for key, value in (entry.get("parameters") or {}).items()}


def launch_arguments(name_or_path: str) -> list[LaunchArgument]:
    """What a bringup declares: the global arguments, then ``node.enabled`` and ``node.param``
    for each node and parameter of its file (any other parameter of a node may be overridden
    too: the node itself rejects one it does not declare)."""
    arguments = [LaunchArgument(k, "", text, BOOLEANS + ("",) if k == "use_sim_time" else None)
                 for k, text in GLOBAL_ARGUMENTS.items()]
    for node in read_bringup(name_or_path):
        arguments.append(LaunchArgument(f"{node.executable}.enabled", _text(node.enabled),
                                        f"start {node.executable}", BOOLEANS))
        arguments += [LaunchArgument(f"{node.executable}.{key}", _text(value),
                                     f"{node.executable} parameter {key} (ros2 param describe)")
                      for key, value in node.parameters.items()]
    return arguments


def load_bringup(name_or_path: str, overrides: list[str] | dict[str, str] = ()) -> list[BringupNode]:
    """Nodes of a bringup file with overrides applied: ``node.param:=value``,
    ``node.enabled:=false``, or a global argument (``namespace``, ``use_sim_time``, ``robot``,
    ``policy_path``; a node's own argument wins over a global one). DroilError, one line, for
    anything that names no node of the file, a global that does not exist, or a value a switch
    cannot take."""
    nodes = read_bringup(name_or_path)
    by_name = {n.executable: n for n in nodes}
    where = bringup_path(name_or_path).stem
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    # globals first: a node's own argument is more specific and wins
    for target, value in sorted(items, key=lambda item: "." in item[0]):
        executable, dot, key = target.partition(".")
        if not dot:
            _apply_global(nodes, target, value, where)
            continue
        if not key:
            raise DroilError(f"override '{target}:={value}' is not of the form node.parameter:=value")
        if executable not in by_name:
            raise DroilError(f"override '{target}:={value}': no node '{executable}' in {where} "
                             f"({', '.join(by_name)})")
        if key == "enabled":
            by_name[executable].enabled = _switch(target, value)
        else:
            by_name[executable].parameters[key] = yaml.safe_load(value) if value else ""
    return nodes


def _split(item: str) -> tuple[str, str]:
    target, sep, value = item.partition(":=")
    if not sep:
        raise DroilError(f"override '{item}' is not of the form node.parameter:=value or name:=value")
    return target, value


def _switch(name: str, value: str) -> bool:
    if value.lower() not in BOOLEANS:
        raise DroilError(f"{name} must be true or false, got '{value}'")
    return value.lower() == "true"


def _apply_global(nodes: list[BringupNode], name: str, value: str, where: str) -> None:
    if name not in GLOBAL_ARGUMENTS:
        raise DroilError(f"unknown argument '{name}' for {where} (global arguments: "
                         f"{', '.join(GLOBAL_ARGUMENTS)}; node arguments: node.parameter:=value)")
    if value == "":
        return
    if name == "namespace":
        for node in nodes:
            node.namespace = value
    elif name == "use_sim_time":
        for node in nodes:
            node.parameters["use_sim_time"] = _switch(name, value)
    elif name == "robot":
        for node in (n for n in nodes if "robot" in n.parameters):
            node.parameters["robot"] = value
    else:
        policy = [n for n in nodes if n.executable == "policy"]
        if not policy:
            raise DroilError(f"policy_path: {where} has no policy node")
        policy[0].parameters["policy_path"] = value


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

    def exited(self, among: set[str] | None = None) -> str:
        """The name of a node (``among`` these, or any) that has exited, or ''."""
        return next((name for name, p in self.procs.items()
                     if (among is None or name in among) and p.poll() is not None), "")

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
    """Run the enabled nodes until interrupted or until a required one exits; 0 if all ended
    cleanly."""
    stopping = False

    def interrupt(signum, frame):
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    required = {n.executable for n in nodes if n.enabled and n.required}
    with NodeGroup() as group:
        try:
            for node in (n for n in nodes if n.enabled):
                log(f"started {node.executable} (pid {group.start(node).pid})")
            failed = ""
            while not stopping and not failed:
                time.sleep(0.1)
                failed = group.exited(required)
            if failed:
                log(f"{failed} exited with code {group.procs[failed].returncode}: stopping the others")
            codes = group.stop()
            log("stopped: " + ", ".join(f"{name} {code}" for name, code in codes.items()))
            return 0 if not failed and all(c == 0 for c in codes.values()) else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def launch_nodes(name: str, configurations: dict[str, str]) -> list[BringupNode]:
    """The nodes a launch of bringup ``name`` starts, given its launch configurations: those
    that name one of its arguments or nodes apply; others (a parent launch file's) are not ours."""
    defaults = {a.name: a.default for a in launch_arguments(name)}
    ours = {n.executable for n in read_bringup(name)}
    return load_bringup(name, {k: v for k, v in configurations.items()  # a default changes nothing
                               if (k in defaults or k.partition(".")[0] in ours) and v != defaults.get(k)})


def launch_description(name: str):
    """The ``launch_ros`` form of a bringup, for ``launch/<name>.launch.py``: its arguments
    declared (``--show-args``), then the nodes ``load_bringup`` makes of them. Configurations
    of a parent launch file that name none of our arguments or nodes are not ours and are left
    alone; a required node that exits shuts the launch down."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def nodes(context):
        return [Node(package="droil_ros", executable=n.executable, name=n.executable,
                     namespace=n.namespace, output="screen",
                     parameters=[{k: v for k, v in n.parameters.items() if v != ""}],
                     on_exit=Shutdown(reason=f"{n.executable} exited") if n.required else None)
                for n in launch_nodes(name, context.launch_configurations) if n.enabled]

    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                choices=list(a.choices) if a.choices else None)
          for a in launch_arguments(name)),
        OpaqueFunction(function=nodes)])
