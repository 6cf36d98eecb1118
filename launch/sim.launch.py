"""ros2 launch droil_ros sim.launch.py: the nodes of config/bringup/sim.yaml."""

from droil_ros.bringup import launch_description


def generate_launch_description():
    return launch_description("sim")
