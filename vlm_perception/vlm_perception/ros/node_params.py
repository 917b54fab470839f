"""The node's parameters: names, types, defaults and descriptions in one table.

README's parameter table is written from this list; keep them in step.
Parameters marked on_configure are read when the node is configured (model,
topics, QoS); the others take effect at once when set at run time. Those
marked startup_only choose code or files to load (the backend class, its
options, the model): they come only from the parameter file, launch file or
command line, so a peer on the ROS graph cannot make the node import a module
or read a path of its choosing (README, "Security"); autostart is one too, as
it means nothing after start-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.parameter import Parameter

from .input_qos import MODES


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    type: Parameter.Type
    description: str
    # Used when the model and topics are set up (lifecycle configure): changes are
    # refused while the node is configured, and take effect on the next configure.
    on_configure: bool = False
    float_range: tuple[float, float] | None = None
    # Read-only after start-up (also read when configuring); see the module docstring.
    startup_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=self.name, type=self.type.value, description=self.description, read_only=self.startup_only,
        )
        if self.startup_only:
            descriptor.additional_constraints = STARTUP_ONLY_HOW
        elif self.on_configure:
            descriptor.description += " (set while unconfigured)"
        if self.float_range is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1])
            ]
        return descriptor


# A slower standing-query timer would need a period beyond what a ROS timer holds (int64 ns);
# the descriptor's range cannot say "0, or at least this", so live_value_problem() does.
MIN_RATE_HZ = 0.001


def live_value_problem(name: str, value: Any) -> str:
    """Why `value` cannot be used for run-time parameter `name` beyond its descriptor's range; '' if it can."""
    if name == "rate_hz" and 0.0 < value < MIN_RATE_HZ:
        return f"rate_hz {value:g} is below {MIN_RATE_HZ:g}; use 0 for service calls only, or at least {MIN_RATE_HZ:g}"
    return ""


STARTUP_ONLY_HOW = ("start-up only: set it in the parameter file, the launch file or on the command line "
                     "(--ros-args -p name:=value) and restart the node to change it")

S, D, SA, B = Parameter.Type.STRING, Parameter.Type.DOUBLE, Parameter.Type.STRING_ARRAY, Parameter.Type.BOOL

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("backend", "owlv2", S,
              "Model family: owlv2, owlvit, clip, generative, remote, offline, the name of an installed plugin "
              "(entry-point group vlm_perception.backends), or package.module:ClassName of your own backend class",
              True, startup_only=True),
    ParamSpec("model", "", S,
              "Model id for the backend (Hugging Face id, or the served name for remote); "
              "empty = the backend's default", True, startup_only=True),
    ParamSpec("model_path", "", S, "Local model directory; overrides `model` when set", True, startup_only=True),
    ParamSpec("device", "auto", S, "auto (cuda if available, else cpu), cpu or cuda", True),
    ParamSpec("precision", "auto", S,
              "Number format of the model's towers: auto (bf16 on CPUs with AMX/AVX-512 BF16, bf16 or fp16 on "
              "CUDA, else fp32), fp32, bf16 or fp16", True),
    ParamSpec("runtime", "torch", S,
              "torch, or openvino: the owl/clip image tower in OpenVINO on the CPU (needs the openvino extra; "
              "exported once, cached under $XDG_CACHE_HOME/vlm_perception)", True),
    ParamSpec("backend_options", "", S,
              "Extra backend keyword arguments as a YAML mapping, e.g. '{nms_iou: 0.5}'; trust_remote_code is refused",
              True, startup_only=True),
    ParamSpec("threshold", 0.0, D,
              "Score at or above which an object counts as present; 0 = the backend's recommended value",
              float_range=(0.0, 1.0)),
    ParamSpec("queries", [], SA, "Standing object phrases evaluated at rate_hz on the latest frame"),
    ParamSpec("rate_hz", 1.0, D, "How often standing queries run on a new frame; 0 = only on service calls, "
              f"else at least {MIN_RATE_HZ:g}", float_range=(0.0, 100.0)),
    ParamSpec("max_image_age", 2.0, D,
              "Seconds after which the latest frame is too old to answer from; 0 disables the check",
              float_range=(0.0, 3600.0)),
    ParamSpec("depth_scale", 0.0, D,
              "Metres per depth unit; 0 = by encoding (16UC1 millimetres, 32FC1 metres)", float_range=(0.0, 10.0)),
    ParamSpec("sync_slop", 0.05, D, "Largest color/depth stamp difference (s) for pairing a depth frame; "
              "also the longest wait (s) past a color frame's arrival for its depth", float_range=(0.0, 10.0)),
    ParamSpec("grasp_margin", 0.01, D, "Metres added to the object's narrow side for the gripper opening",
              float_range=(0.0, 1.0)),
    ParamSpec("target_frame", "", S,
              "Also publish grasp poses in this tf frame (needs tf2_ros); empty = camera frame only", True),
    ParamSpec("image_qos", "auto", S,
              "auto (the reliability the camera's publishers offer: reliable when all are, else best effort), "
              "sensor_data (best effort) or reliable", True),
    ParamSpec("image_transport", "raw", S, "raw (image) or compressed (image/compressed)", True),
    ParamSpec("cameras", [], SA,
              "Camera names; each reads <name>/image, <name>/depth, <name>/camera_info and publishes under "
              "~/<name>/. Empty = one camera on image, depth, camera_info with outputs under ~/", True),
    ParamSpec("autostart", True, B,
              "Configure and activate at start-up; false = wait for lifecycle transitions", True,
              startup_only=True),
    ParamSpec("stale_frame_s", 1.0, D,
              "Diagnostics warn when a camera's latest frame is older than this (error at 3x)",
              float_range=(0.1, 3600.0)),
    ParamSpec("latency_warn_ms", 0.0, D, "Diagnostics warn when inference p95 exceeds this; 0 = never",
              float_range=(0.0, 600000.0)),
)

CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "runtime": ("torch", "openvino"),
    "image_qos": MODES,
    "image_transport": ("raw", "compressed"),
}
