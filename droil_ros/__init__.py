"""droil_ros: from demonstrations to robust deployed policies on ROS 2."""

__version__ = "0.1.0"
