"""The package's large-image Fast DDS profile for the processes that publish camera frames.

Fast DDS's default shared-memory segment (512 KiB) is smaller than one raw
640x480 frame, and whether a frame fits is the *publisher's* setting: its
participant's profile decides. So the tools that publish frames (the bag
replay) load config/fastdds_large_images.xml for their own process, unless
the user chose a profile. Call before rclpy starts; Fast DDS reads the
variables when the first participant is made. Jazzy's Fast DDS 2.x reads
FASTRTPS_DEFAULT_PROFILES_FILE, 3.x (Kilted) FASTDDS_DEFAULT_PROFILES_FILE.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping, Optional

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def large_image_profile() -> Optional[Path]:
    """The installed profile; None where the package is not installed (run from a source tree)."""
    try:
        path = Path(get_package_share_directory("vlm_perception")) / "config" / "fastdds_large_images.xml"
    except PackageNotFoundError:
        return None
    return path if path.is_file() else None


def use_large_image_profile(environ: MutableMapping[str, str] = os.environ) -> Optional[Path]:
    """Point both variables at the large-image profile unless either is set; the path set, or None."""
    if any(environ.get(name) for name in PROFILE_VARIABLES):
        return None
    path = large_image_profile()
    if path is not None:
        for name in PROFILE_VARIABLES:
            environ[name] = str(path)
    return path
