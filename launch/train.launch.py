"""ros2 launch droil_ros train.launch.py: the nodes of config/bringup/train.yaml."""

from droil_ros.bringup import launch_description


def generate_launch_description():
    return launch_description("train")
