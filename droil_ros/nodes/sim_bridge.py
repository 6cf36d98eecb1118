"""MuJoCo simulation behind the same topics as the real robot (JointState, Imu, effort commands).

The core environment does the physics; this node only converts messages and decides when to
step: ``realtime`` steps on a wall-clock timer with the latest command (zero-order hold, like
hardware); ``lockstep`` publishes a state, waits for the command that answers it, then steps
(deterministic and faster than real time; exactly one state is ever waiting for its answer,
also across ``~/reset``). ``paused`` stops both. ``/clock`` carries the simulated time, monotonic
across resets.

Lockstep means lockstep: a state is never stepped past without its own command, however loaded
the machine. A state unanswered for ``lockstep_timeout`` is an error in the log and in
``/diagnostics`` (``lockstep_timeouts``), and is offered again; ``lockstep_on_timeout: step``
restores stepping with the held command instead, which makes holes in recordings. Controllers in
lockstep should run their watchdogs on sim time (``use_sim_time``): a wall-clock watchdog firing
while the simulation waits sends a command that answers no state.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger

from droil_ros.errors import DroilError, PerturbationError
from droil_ros.nodes.common import (
    CLOCK_QOS,
    COMMAND_HOLD_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    declare_robot,
    describe,
    imu_msg,
    joint_state_msg,
    spin_node,
)
from droil_ros.nodes.interface import RobotInterface
from droil_ros.sim.envs import make_env
from droil_ros.sim.perturb import parse_perturbation

MODES = ("realtime", "lockstep")
ON_TIMEOUT = ("wait", "step")
DIAGNOSTICS_PERIOD = 1.0  # s
REOFFER_PERIOD = 1.0  # s: lockstep offers state 0 again until a first command answers it


class SimBridge(Node):
    def __init__(self):
        super().__init__("sim_bridge")
        self.spec = declare_robot(self)
        if not self.spec.uses_sensor_observation:
            raise DroilError(f"sim_bridge serves robots observed through JointState + Imu; "
                             f"'{self.spec.id}' observes through Gymnasium")
        declare = self.declare_parameter
        task = declare("task", "stand", describe("task of the robot spec (initial tilt, fall "
                                                 "tilt)", read_only=True)).value
        self.mode = declare("mode", "realtime", describe(
            "realtime: step on a wall-clock timer at the control rate; lockstep: step when the "
            "command answering the last state arrives (waits for the first one)",
            read_only=True)).value
        if self.mode not in MODES:
            raise DroilError(f"unknown mode '{self.mode}' (modes: {', '.join(MODES)})")
        self.seed = declare("seed", 0, describe("seed of episode 0; episode k uses seed + k",
                                                read_only=True)).value
        declare("initial_tilt", math.nan, describe(
            "initial tilt in rad for the next episodes; NaN: random within the task's init_tilt"))
        self.publish_clock = declare("publish_clock", True, describe(
            "publish /clock (sim time) and stamp messages with it; false: stamp with the node "
            "clock", read_only=True)).value
        self.lockstep_timeout = declare("lockstep_timeout", 10.0, describe(
            "lockstep: seconds a state waits for its command before an error is reported (and "
            "lockstep_on_timeout applies)", read_only=True)).value
        if not self.lockstep_timeout > 0:
            raise DroilError(f"lockstep_timeout must be positive, got {self.lockstep_timeout}")
        self.on_timeout = declare("lockstep_on_timeout", "wait", describe(
            "lockstep, after lockstep_timeout: wait (offer the state again, never step without its "
            "command) or step (step with the held command: loses the state's command)",
            read_only=True)).value
        if self.on_timeout not in ON_TIMEOUT:
            raise DroilError(f"unknown lockstep_on_timeout '{self.on_timeout}' "
                             f"({', '.join(ON_TIMEOUT)})")
        self.hold = declare("hold_until_command", True, describe(
            "realtime: do not step until the first valid command, as a robot held on its stand while "
            "its controller starts (lockstep always waits for commands)", read_only=True)).value
        self.paused = declare("paused", False, describe(
            "stop stepping and publishing (commands are still held); settable at run time, e.g. "
            "to let a recorder catch up; lockstep offers the state again when resumed")).value
        perturbation = declare("perturbation", "", describe(
            "dynamics perturbation, e.g. 'mass=1.5,friction=0.3' (empty: nominal); settable at "
            "run time")).value

        self.env = make_env(self.spec, task)
        self._set_perturbation(perturbation)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.sim = self.env.unwrapped
        self.frame_id = self.spec.imu["frame_id"]
        self.step_ns = round(self.spec.control_dt * 1e9)
        self.steps = 0  # since start: /clock never runs backwards, not even on reset
        self.episode = -1
        self.fallen = False
        self.timeouts = 0  # lockstep: states unanswered for lockstep_timeout
        self.held_steps = 0  # lockstep: steps made with the held command (lockstep_on_timeout: step)
        self.started = False  # the first command starts the simulated clock (see hold_until_command)
        self.awaiting = False  # lockstep: a published state waits for its command
        self.offered = 0.0  # lockstep: when the last state was published (monotonic s)
        self.stale_answer = False  # lockstep: the awaited command answers a state before a reset
        self.resume_with = None  # lockstep: what to do on resume for a command that came while paused
        self.action = np.zeros(self.spec.act_dim)  # of the last valid command (zero-order hold)

        self.robot = RobotInterface(self.spec)
        ros = self.spec.ros
        self.imu_pub = self.create_publisher(Imu, ros.imu_topic, SENSOR_QOS)
        self.joint_pub = self.create_publisher(JointState, ros.state_topic, SENSOR_QOS)
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
        self.fallen_pub = self.create_publisher(Bool, "~/fallen", LATCHED_QOS)
        self.create_subscription(self.robot.command.msg_type, ros.command_topic, self._on_command,
                                 COMMAND_HOLD_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.mode == "realtime":
            self.create_timer(self.spec.control_dt, self._on_tick, clock=steady)
        else:
            # a short period: the timer also re-offers state 0 until a controller answers
            self.timeout_timer = self.create_timer(min(self.lockstep_timeout, REOFFER_PERIOD),
                                                   self._on_lockstep_timeout, clock=steady)
        self.create_timer(DIAGNOSTICS_PERIOD, self._publish_diagnostics, clock=steady)
        tilt0 = self._start_episode()
        self.get_logger().info(f"{self.spec.id}/{task}, {self.mode}, {self.spec.control_rate_hz:g} Hz, "
                               f"tilt {tilt0:.3f} rad, perturbation {self.env.perturbation}")

    def _set_perturbation(self, text: str) -> None:
        """Validate with the core and apply; the previous perturbation stays on failure."""
        parsed = parse_perturbation(text)
        if parsed.signal("obs_noise"):
            raise PerturbationError("obs_noise acts on the observation vector, which sim_bridge does "
                                    "not publish; add it where the observation is built")
        previous = self.env.perturbation
        try:
            self.env.set_perturbation(parsed)
        except PerturbationError:
            self.env.set_perturbation(previous)
            raise

    def _on_set_parameters(self, params) -> SetParametersResult:
        # Applied here, not in a post-set callback, because only applying to the model can check
        # targets; read-only and type checks have already passed when rclpy calls this.
        for p in params:
            if p.name == "perturbation":
                try:
                    self._set_perturbation(p.value)
                except PerturbationError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                self.get_logger().info(f"perturbation: {self.env.perturbation}")
            elif p.name == "paused" and p.value != self.paused:
                self.paused = p.value
                self.get_logger().info("paused" if self.paused else "resumed")
                if not self.paused and self.resume_with is not None:
                    resume, self.resume_with = self.resume_with, None
                    resume()
        return SetParametersResult(successful=True)

    def _start_episode(self, publish: bool = True) -> float:
        self.episode += 1
        tilt = self.get_parameter("initial_tilt").value
        options = {"tilt": None if math.isnan(tilt) else tilt}
        _, info = self.env.reset(seed=self.seed + self.episode, options=options)
        self.action = np.zeros_like(self.action)  # no command survives an episode change
        self._set_fallen(False)
        if publish:
            self._publish_state()
        return info["tilt0"]

    def _set_fallen(self, fallen: bool) -> None:
        self.fallen = fallen
        self.fallen_pub.publish(Bool(data=fallen))

    def _publish_state(self) -> None:
        sim_now = Time(nanoseconds=self.steps * self.step_ns)
        stamp = (sim_now if self.publish_clock else self.get_clock().now()).to_msg()
        readings = self.sim.readings()
        self.imu_pub.publish(imu_msg(readings, stamp, self.frame_id))
        joint_state = joint_state_msg(readings, stamp)
        if self.robot.joint_names:  # a robot whose JointStates carry no names
            joint_state.name = []
        self.joint_pub.publish(joint_state)
        if self.publish_clock:
            self.clock_pub.publish(ClockMsg(clock=stamp))
        if self.mode == "lockstep":
            self.awaiting = True
            self.offered = time.monotonic()
            self.timeout_timer.reset()

    def _on_tick(self) -> None:
        """Realtime timer: step, or only offer the state while held."""
        if self.paused:
            return
        if self.started or not self.hold:
            self._advance()
        else:
            self._publish_state()

    def _advance(self) -> None:
        """One control period with the held command, then the state it reached."""
        _, _, terminated, _, _ = self.env.step(self.action)
        self.steps += 1
        if terminated and not self.fallen:
            self._set_fallen(True)
            self.get_logger().warning(f"episode {self.episode}: fell at {self.sim.time:.2f} s; "
                                      f"call ~/reset for a new episode")
        self._publish_state()

    def _on_command(self, msg) -> None:
        try:
            action = self.spec.command_to_action(self.robot.command.decode(msg))
        except ValueError as exc:
            self.get_logger().warning(f"ignored command: {exc}", throttle_duration_sec=1.0)
            return
        self.started = True
        if self.mode == "realtime":
            self.action = action
            return
        # lockstep: one state in flight at a time, and its answer steps the simulation; a command
        # that answers nothing (e.g. a controller's watchdog while paused) is not held either
        if not self.awaiting:
            return
        self.awaiting = False
        if self.stale_answer:  # it answers the state before a reset: offer the new one instead
            self.stale_answer = False
            then = self._publish_state
        else:
            self.action = action
            then = self._advance
        if self.paused:
            self.resume_with = then
        else:
            then()

    def _on_lockstep_timeout(self) -> None:
        if self.paused or not self.awaiting:
            return
        waited = time.monotonic() - self.offered
        if not self.started:
            # nobody answered yet (discovery): offer the state again, but seldom, because a
            # controller that gets two offers answers both and would put two states in flight
            if waited >= REOFFER_PERIOD:
                self.stale_answer = False
                self._publish_state()
            return
        if waited < self.lockstep_timeout:
            return
        self.timeouts += 1
        step = self.on_timeout == "step" and not self.stale_answer
        what = ("stepped with the held command (this state has none of its own)" if step
                else "offering the state again")
        self.get_logger().error(
            f"lockstep: no command for {self.lockstep_timeout:g} s at sim time "
            f"{self.steps * self.spec.control_dt:.3f} s; {what} ({self.timeouts} timeouts)",
            throttle_duration_sec=1.0)
        if step:
            self.held_steps += 1
            self._advance()
        else:  # after a reset, the lost answer was to the state before it: offer the new one
            self.stale_answer = False
            self._publish_state()

    def _publish_diagnostics(self) -> None:
        """Mode, progress and the lockstep counters: WARN once a state waited past the timeout."""
        values = {"mode": self.mode, "paused": self.paused, "episode": self.episode,
                  "steps": self.steps, "fallen": self.fallen,
                  "perturbation": str(self.env.perturbation),
                  "lockstep_timeouts": self.timeouts, "stepped_without_command": self.held_steps}
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if self.timeouts else DiagnosticStatus.OK,
            name=f"{self.get_name()}: simulation", hardware_id=self.spec.id,
            message=(f"{self.timeouts} lockstep timeouts, {self.held_steps} steps without a command"
                     if self.timeouts else "OK"),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                     status=[status]))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """In lockstep the new state waits while the last one is still unanswered (its answer is
        then dropped), so that one state only is ever in flight; paused, it waits for resume."""
        lockstep = self.mode == "lockstep"
        tilt0 = self._start_episode(publish=not (lockstep and (self.awaiting or self.paused)))
        if lockstep and self.awaiting:
            self.stale_answer = True
        elif lockstep and self.paused:
            self.resume_with = self._publish_state
        response.success = True
        response.message = f"episode {self.episode}, initial tilt {tilt0:.3f} rad"
        self.get_logger().info(response.message)
        return response


def main(args: list[str] | None = None) -> int:
    return spin_node(SimBridge, args)


if __name__ == "__main__":
    sys.exit(main())
