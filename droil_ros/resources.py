"""Find the package's data (config/, models/, launch/) without needing AMENT_PREFIX_PATH.

Three layouts are supported: a source checkout or editable install (data beside the package
directory), a pip or colcon install (data in ``<prefix>/share/droil_ros``, the package in
``<prefix>/lib/pythonX.Y/site-packages``), and an explicit ``DROIL_SHARE`` override.
"""

import os
from functools import lru_cache
from pathlib import Path

PACKAGE = "droil_ros"


@lru_cache(maxsize=1)
def share_dir() -> Path:
    override = os.environ.get("DROIL_SHARE")
    if override:
        return Path(override)
    package_dir = Path(__file__).resolve().parent
    source_root = package_dir.parent
    if (source_root / "config" / "robots").is_dir():
        return source_root
    for parent in package_dir.parents:
        candidate = parent / "share" / PACKAGE
        if (candidate / "config" / "robots").is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} share directory (config/, models/); set DROIL_SHARE"
    )


def data_path(*parts: str) -> Path:
    return share_dir().joinpath(*parts)
