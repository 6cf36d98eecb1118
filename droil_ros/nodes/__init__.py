"""Thin rclpy adapters around the ROS-free core: message conversion, parameters, spinning."""
