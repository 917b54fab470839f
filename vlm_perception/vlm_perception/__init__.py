"""vlm_perception: ask in plain language what a robot's cameras see.

The modules of this package outside `node` are ROS-free: they work on numpy
arrays and dataclasses and are tested without DDS.
"""
