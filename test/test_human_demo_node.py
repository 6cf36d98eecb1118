"""human_demo over real DDS: sim_bridge (lockstep) + human_demo + demo_recorder as processes, the
recording path of simulated human demonstrations: the bag converts into a dataset whose actions
are the person's stick commands, the same ones the core model gives on the recorded states.
This module draws its ROS domain from 66..70.
"""

import random
import re
import subprocess

import numpy as np
from rosgraph import ProbeNode, graph_fixtures, ros_env
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from droil_ros.data.bag import dataset_from_bag
from droil_ros.nodes.common import CLOCK_QOS
from droil_ros.robots import load_spec
from droil_ros.sim.human import HumanDemonstrator, demonstrators
from droil_ros.sim.lqr import LQRController

DOMAIN = random.randint(66, 70)
ROS_ENV = ros_env(DOMAIN)
SPEC = load_spec("wheel_legged")


class Probe(ProbeNode):
    def setup(self):
        self.record({"/clock": (Clock, CLOCK_QOS)})
        self.client(Trigger, "/demo_recorder/stop")  # before the node starts: see GraphClient.client


ros_graph, probe, launch = graph_fixtures(ROS_ENV, lambda: Probe(DOMAIN))


def logged(proc: subprocess.Popen, *texts: str) -> bool:
    log = proc.log_path.read_text()
    return all(text in log for text in texts)


def test_recorded_human_demonstration_holds_the_persons_commands(launch, probe, tmp_path):
    recorder = launch("demo_recorder", autostart="true", output_dir=str(tmp_path / "bags"))
    person = launch("human_demo", use_sim_time="true", seed=3, demonstrator=1)
    assert probe.wait_for(lambda: logged(recorder, "/effort_controller/commands: 1 publisher"),
                          30.0), recorder.log_path.read_text()
    assert probe.wait_for(lambda: logged(person, "simulated human"), 10.0), person.log_path.read_text()
    # paused until the recorder hears the bridge's states (on a loaded machine discovery takes
    # seconds): the bag then begins with the first state the person answers
    launch("sim_bridge", mode="lockstep", initial_tilt=0.02, seed=0, paused="true")
    assert probe.wait_for(lambda: logged(recorder, "/joint_states: 1 publisher", "/imu/data: 1 publisher"),
                          30.0), recorder.log_path.read_text()
    assert probe.set_parameter("sim_bridge", "paused", False) == (True, "")
    assert probe.wait_for(lambda: logged(recorder, "recording /joint_states", "recording /imu/data",
                                         "recording /effort_controller/commands"), 30.0), (
        recorder.log_path.read_text())
    recording = probe.sim_time()
    assert probe.wait_for(lambda: probe.sim_time() >= recording + 3.0, 60.0), probe.sim_time()
    response = probe.call(Trigger, "/demo_recorder/stop", Trigger.Request())
    assert response.success, response.message
    path = response.message.removeprefix("stopped: ").rsplit(": ", 1)[0]

    ds = dataset_from_bag(path, SPEC, "stand")
    # every recorded state but a few makes a transition
    states = int(re.search(r"from (\d+) states", ds.meta["source"]).group(1))
    assert len(ds) >= 0.9 * states and states > 100 and not ds.terminals.any(), ds.meta["source"]
    actions = ds.actions[:, 0].astype(np.float64)
    levels = actions / (SPEC.action_high[0] / 127)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # 8-bit stick steps
    assert np.mean(np.diff(actions) != 0) <= 0.25 + 0.02  # read at 50 Hz, held between reads
    lqr = LQRController(SPEC)
    assert np.abs(actions - [lqr(o)[0] for o in ds.observations]).mean() > 0.05  # not the LQR
    # the core model, fed the recorded states from the first, answers exactly as the node did; the
    # bridge offers its first state again each second until an answer reaches it, so the person may
    # have answered that state more than once (discovery on a loaded machine)
    observations = ds.observations.astype(np.float64)
    replays = []
    for again in range(3):
        model = HumanDemonstrator(SPEC, demonstrators(2, 3)[1], seed=3 + 1)
        for _ in range(again):
            model(observations[0])
        replays.append(np.array([model(o)[0] for o in observations]))
        if np.allclose(replays[-1], actions, rtol=0.0, atol=1e-4):
            break
    else:
        np.testing.assert_allclose(replays[0], actions, atol=1e-4)
