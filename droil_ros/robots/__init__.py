"""Robot specs (ROS-free): load by id or path, build observations, map actions to actuators."""

from droil_ros.robots.spec import (
    RobotSpec,
    SensorReadings,
    Task,
    available_robots,
    load_spec,
    parse_spec,
)

__all__ = ["RobotSpec", "SensorReadings", "Task", "available_robots", "load_spec", "parse_spec"]
