"""trainer over real DDS: ~/train learns from a dataset in a worker, publishes progress, exports
ONNX and announces it on /droil/policy_updates; a bad dataset is reported, not fatal."""

import hashlib
import json
import random
from pathlib import Path

from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rosgraph import ProbeNode, graph_fixtures, ros_env
from std_msgs.msg import String
from std_srvs.srv import Trigger

from droil_ros.nodes.common import LATCHED_QOS
from droil_ros.policy import OnnxPolicy
from droil_ros.robots import load_spec

DOMAIN = random.randint(71, 80)
ROS_ENV = ros_env(DOMAIN)


class Probe(ProbeNode):
    def setup(self):
        self.record({"/trainer/progress": (String, LATCHED_QOS), "/droil/policy_updates": (String, 10)})
        self.client(Trigger, "/trainer/train")

    def states(self) -> list[dict]:
        return [json.loads(m.data) for m in self.received("/trainer/progress")]


# a node that has trained holds torch: on a loaded machine its exit can take longer than 3 s
ros_graph, probe, launch = graph_fixtures(ROS_ENV, lambda: Probe(DOMAIN), grace=15.0)


def test_train_export_announce_and_report_failures(probe, launch, lqr_dataset, tmp_path):
    data = lqr_dataset.save(tmp_path / "demos.npz")
    launch("trainer", data=str(data), algo="bc", preset="fast", steps=120, seeds=2,
           output_dir=str(tmp_path / "policies"))
    answer = probe.call(Trigger, "/trainer/train", Trigger.Request(), timeout=30.0)
    assert answer.success, answer.message
    assert probe.wait_for(lambda: any(s["state"] in ("done", "failed") for s in probe.states()), 120)
    states = probe.states()
    done = states[-1]
    assert done["state"] == "done", done
    assert [s["step"] for s in states if s["state"] == "training" and s.get("step")] == [50, 100, 120]
    assert probe.wait_for(lambda: probe.received("/droil/policy_updates"), 10)
    announcement = json.loads(probe.received("/droil/policy_updates")[-1].data)
    announced = announcement["path"]
    assert announced == done["policies"][0] and len(done["policies"]) == 2
    assert announcement["sha256"] == hashlib.sha256(Path(announced).read_bytes()).hexdigest()
    assert OnnxPolicy(announced, load_spec("wheel_legged")).metadata["learner"] == "bc"

    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"not a dataset")
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(bad))
    request = SetParameters.Request(parameters=[Parameter(name="data", value=value)])
    assert probe.call(SetParameters, "/trainer/set_parameters", request).results[0].successful
    assert probe.call(Trigger, "/trainer/train", Trigger.Request()).success
    assert probe.wait_for(lambda: probe.states()[-1]["state"] == "failed", 60)
    assert "cannot read dataset" in probe.states()[-1]["reason"]
