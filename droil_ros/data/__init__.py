"""Transition datasets (ROS-free): the file format, collection in the simulator, bag conversion."""

from droil_ros.data.dataset import (
    DOMAINS,
    QUALITIES,
    DatasetError,
    TransitionDataset,
    concatenate,
    load_dataset,
)

__all__ = ["DOMAINS", "QUALITIES", "DatasetError", "TransitionDataset", "concatenate", "load_dataset"]
