"""Core results (dataclasses) -> vlm_perception_msgs messages."""
from __future__ import annotations

from typing import Any, Sequence

from vlm_perception_msgs.msg import GraspTarget, GraspTargetArray, ObjectPresence, ObjectPresenceArray

from .engine import Presence, SceneResult, Target2D

# 3D poses come from depth and camera intrinsics; until that is wired in, say why there is none.
POSE_STATUS_2D_ONLY = "2D only: 3D grasp poses from depth are not computed by this version"


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


def target_msgs(header: Any, targets: Sequence[Target2D]) -> list[GraspTarget]:
    msgs = []
    for t in targets:
        (center_u, center_v), (width_px, height_px) = t.center, t.size
        msgs.append(
            GraspTarget(
                header=header,
                query=t.query,
                score=float(t.score),
                center_u=float(center_u),
                center_v=float(center_v),
                width_px=float(width_px),
                height_px=float(height_px),
                has_pose=False,
                pose_status=POSE_STATUS_2D_ONLY,
            )
        )
    return msgs


def scene_msgs(header: Any, result: SceneResult, backend: str) -> tuple[ObjectPresenceArray, GraspTargetArray]:
    """The two output messages of one evaluation; the service response reuses their contents."""
    presence = ObjectPresenceArray(
        header=header,
        results=presence_msgs(header, result.presence),
        backend=backend,
        inference_ms=float(result.inference_ms),
    )
    return presence, GraspTargetArray(header=header, targets=target_msgs(header, result.targets))
