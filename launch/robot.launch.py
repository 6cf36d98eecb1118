"""ros2 launch droil_ros robot.launch.py: the nodes of config/bringup/robot.yaml."""

from droil_ros.bringup import launch_description


def generate_launch_description():
    return launch_description("robot")
