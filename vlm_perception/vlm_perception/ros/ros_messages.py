"""Core results (dataclasses) -> vlm_perception_msgs messages."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped, Quaternion
from std_msgs.msg import Header

from vlm_perception_msgs.msg import GraspTarget, GraspTargetArray, ObjectPresence, ObjectPresenceArray

from ..core.engine import Presence, SceneResult, Target2D
from ..core.grasping import Grasp
from ..core.health import HealthStatus

try:  # vision_msgs is not on PyPI; where it is installed, ~/detections is published too
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:
    Detection2DArray = None


def presence_msgs(header: Any, presence: Sequence[Presence]) -> list[ObjectPresence]:
    return [
        ObjectPresence(
            header=header,
            query=p.query,
            present=p.present,
            confidence=float(p.confidence),
            threshold=float(p.threshold),
            count=int(p.count),
        )
        for p in presence
    ]


def pose_msg(grasp: Grasp) -> Pose:
    (x, y, z), (qx, qy, qz, qw) = grasp.position, grasp.orientation
    return Pose(position=Point(x=float(x), y=float(y), z=float(z)),
                orientation=Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)))


def target_msgs(header: Any, targets: Sequence[Target2D], grasps: Sequence[Grasp]) -> list[GraspTarget]:
    """One GraspTarget per 2D target, with the 3D grasp computed for it (or why there is none)."""
    msgs = []
    for target, grasp in zip(targets, grasps, strict=True):
        (center_u, center_v), (width_px, height_px) = target.center, target.size
        msg = GraspTarget(
            header=header,
            query=target.query,
            score=float(target.score),
            center_u=float(center_u),
            center_v=float(center_v),
            width_px=float(width_px),
            height_px=float(height_px),
            has_pose=grasp.has_pose,
            grasp_width=float(grasp.grasp_width),
            pose_status=grasp.status,
        )
        if grasp.has_pose:
            msg.pose = pose_msg(grasp)
        msgs.append(msg)
    return msgs


def scene_msgs(header: Any, result: SceneResult, grasps: Sequence[Grasp],
               backend: str) -> tuple[ObjectPresenceArray, GraspTargetArray]:
    """The two output messages of one evaluation; the service response reuses their contents."""
    presence = ObjectPresenceArray(
        header=header,
        results=presence_msgs(header, result.presence),
        backend=backend,
        inference_ms=float(result.inference_ms),
    )
    return presence, GraspTargetArray(header=header, targets=target_msgs(header, result.targets, grasps))


def pose_outputs(targets: GraspTargetArray) -> Optional[tuple[PoseArray, PoseStamped]]:
    """All poses (best first) and the best one, for MoveIt-side consumers; None without any pose."""
    poses = [t.pose for t in targets.targets if t.has_pose]
    if not poses:
        return None
    return (PoseArray(header=targets.header, poses=poses), PoseStamped(header=targets.header, pose=poses[0]))


def detection_array_msg(header: Any, targets: Sequence[Target2D]) -> Any:
    """vision_msgs/Detection2DArray of the localized targets: class_id = phrase, boxes in source pixels."""
    detections = []
    for target in targets:
        (center_u, center_v), (width_px, height_px) = target.center, target.size
        bbox = BoundingBox2D(size_x=float(width_px), size_y=float(height_px))
        bbox.center.position.x, bbox.center.position.y = float(center_u), float(center_v)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = target.query
        hypothesis.hypothesis.score = float(target.score)
        detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox))
    return Detection2DArray(header=header, detections=detections)


def diagnostic_array_msg(stamp: Any, statuses: Sequence[HealthStatus], hardware_id: str) -> DiagnosticArray:
    return DiagnosticArray(header=Header(stamp=stamp), status=[
        DiagnosticStatus(
            level=bytes([int(s.level)]),
            name=s.name,
            message=s.message,
            hardware_id=hardware_id,
            values=[KeyValue(key=k, value=str(v)) for k, v in s.values.items()],
        )
        for s in statuses
    ])
