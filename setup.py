"""ament_python package: console scripts under lib/droil_ros, data under share/droil_ros."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "droil_ros"


def tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries for every file below ``top``, keeping sub-folders (no recursion
    in setuptools' data_files)."""
    entries = []
    for folder, _, files in sorted(os.walk(top)):
        paths = sorted(os.path.join(folder, f) for f in files if not f.startswith("."))
        if paths:
            entries.append((os.path.join("share", PACKAGE, folder), paths))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        *tree("config"),
        *tree("models"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="droil_ros developers",
    maintainer_email="droil@example.com",
    description="From demonstrations to robust deployed policies on ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    extras_require={"ray": ["ray>=2.40"]},
    entry_points={
        "console_scripts": [
            "droil = droil_ros.cli:main",
            "sim_bridge = droil_ros.nodes.sim_bridge:main",
            "lqr_expert = droil_ros.nodes.lqr_expert:main",
            "demo_recorder = droil_ros.nodes.demo_recorder:main",
            "policy = droil_ros.nodes.policy:main",
            "teleop = droil_ros.nodes.teleop:main",
            "human_demo = droil_ros.nodes.human_demo:main",
            "trainer = droil_ros.nodes.trainer:main",
        ],
    },
)
