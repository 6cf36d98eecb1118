"""Simulated human demonstrator over ROS: JointState + Imu -> observation (spec) -> the core's
``HumanDemonstrator`` -> effort commands, so that sim_bridge + human_demo + demo_recorder record
"human" demonstrations into a bag exactly as a person with a joystick would be recorded.

The same node as ``lqr_expert`` (pairing, zero effort on bad input, watchdog, ``/cmd_vel`` sets the
speed reference) with the person in place of the LQR. The person's delay and 50 Hz stick are
counted in answered states, so the node must answer every state at the control rate: lockstep
simulation (``sim_bridge mode:=lockstep``, ``use_sim_time:=true``) or a realtime bridge on an
unloaded machine. ``demonstrator`` picks one of the people drawn from ``seed``, the same person as
session ``demonstrator`` of ``droil collect --expert human --seed SEED``; -1 is the nominal person.
"""

from __future__ import annotations

import sys

from droil_ros.errors import DroilError
from droil_ros.nodes.common import describe, spin_node
from droil_ros.nodes.lqr_expert import LQRExpert
from droil_ros.robots.spec import Task
from droil_ros.sim.human import HumanDemonstrator, HumanParams, demonstrators


class HumanDemo(LQRExpert):
    def __init__(self):
        super().__init__("human_demo")

    def make_controller(self, task: Task) -> HumanDemonstrator:
        seed = self.declare_parameter("seed", 0, describe(
            "draws the demonstrators and the person's noise", read_only=True)).value
        index = self.declare_parameter("demonstrator", 0, describe(
            "which demonstrator drawn from seed (0, 1, ...); -1: the nominal person",
            read_only=True)).value
        if index < -1 or seed < 0:
            raise DroilError(f"demonstrator must be >= -1 and seed >= 0, got {index} and {seed}")
        params = HumanParams() if index < 0 else demonstrators(index + 1, seed)[index]
        return HumanDemonstrator(self.spec, params, v_ref=task.v_ref, seed=seed + max(index, 0))

    def controller_summary(self) -> str:
        p = self.controller.params
        return (f"simulated human (delay {p.delay_steps} steps, gain {p.gain:.2f}, x gain "
                f"{p.x_gain:.2f}, motor noise {p.ou_sigma:.2f})")


def main(args: list[str] | None = None) -> int:
    return spin_node(HumanDemo, args)


if __name__ == "__main__":
    sys.exit(main())
