"""ros2 launch droil_ros record.launch.py: the nodes of config/bringup/record.yaml."""

from droil_ros.bringup import launch_description


def generate_launch_description():
    return launch_description("record")
