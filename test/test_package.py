"""The ament_python layout: package.xml, setup.cfg, and a real colcon build of the package."""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import REPO

PACKAGE_PATHS = ["package.xml", "setup.py", "setup.cfg", "resource", "droil_ros", "launch",
                 "config", "models"]


def test_package_xml_format_3_with_ros_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "droil_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "std_srvs", "diagnostic_msgs",
            "rosgraph_msgs", "lifecycle_msgs", "launch", "launch_ros"} <= exec_deps
    assert {"python3-mujoco-pip", "python3-onnxruntime-pip", "python3-rosbags-pip"} <= exec_deps
    assert "launch_pytest" in {e.text for e in root.findall("test_depend")}


def test_setup_cfg_puts_scripts_where_ros2_run_looks():
    text = (REPO / "setup.cfg").read_text()
    assert "script_dir=$base/lib/droil_ros" in text
    assert "install_scripts=$base/lib/droil_ros" in text
    assert (REPO / "resource" / "droil_ros").is_file()


def test_colcon_build_installs_the_ament_layout(tmp_path):
    src = tmp_path / "src" / "droil_ros"
    src.mkdir(parents=True)
    for name in PACKAGE_PATHS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    colcon = Path(sys.executable).parent / "colcon"
    proc = subprocess.run([str(colcon), "build", "--base-paths", "src"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    prefix = tmp_path / "install" / "droil_ros"
    share = prefix / "share" / "droil_ros"
    assert (prefix / "lib" / "droil_ros" / "droil").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "droil_ros").is_file()
    assert (share / "package.xml").is_file()
    for spec in (REPO / "config" / "robots").glob("*.yaml"):
        assert (share / "config" / "robots" / spec.name).is_file()
    assert (share / "models" / "robots" / "wheel_legged.xml").is_file()
    for launch_file in (REPO / "launch").glob("*.launch.py"):
        assert (share / "launch" / launch_file.name).is_file()

    # the installed package finds its installed data (not this checkout's)
    site = next(prefix.glob("lib/python*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = ("import droil_ros.resources as r, droil_ros.robots as s;"
             "print(r.share_dir()); print(s.load_spec('wheel_legged').model_path)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(share), str(share / "models" / "robots" / "wheel_legged.xml")]
    run = subprocess.run([str(prefix / "lib" / "droil_ros" / "droil"), "sim", "--seconds", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and "falls 0" in run.stdout, run.stderr
