"""ROS-free reading of a bag's recorded QoS offers, down to the one decision replay needs: latch a topic or not.

rosbag2 stores, per topic, the QoS profile each recorded publisher offered
(`offered_qos_profiles`): in metadata.yaml (a YAML list from version 9 on, a
YAML string before), in the MCAP channel metadata and in the sqlite3 topics
table (a YAML string). Policies are names from version 9 on
('transient_local'), rmw enum numbers before (1). rosbags parses them into
`Qos` tuples; bags of other tools hold the raw forms.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import yaml

TRANSIENT_LOCAL = "transient_local"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
# rmw_qos_durability_policy_e, as rosbag2 wrote it before metadata version 9.
_DURABILITY_NUMBERS = {0: "system_default", 1: TRANSIENT_LOCAL, 2: "volatile", 3: "unknown", 4: "best_available"}


def offered_durabilities(profiles: Any) -> tuple[str, ...]:
    """The durability each recorded publisher offered ('transient_local', 'volatile', ...).

    `profiles` is the YAML text, the parsed YAML list, or rosbags' `Qos` tuples; empty or None
    means none recorded. Raises ValueError saying what is wrong with anything else.
    """
    if profiles is None or profiles == "":
        return ()
    if isinstance(profiles, (str, bytes)):
        try:
            profiles = yaml.safe_load(profiles)
        except yaml.YAMLError as exc:
            raise ValueError(f"offered_qos_profiles is not YAML ({exc})".replace("\n", " ")) from exc
        if profiles is None:
            return ()
    if not isinstance(profiles, Sequence) or isinstance(profiles, (str, bytes)):
        raise ValueError(f"offered_qos_profiles is not a list of QoS profiles: {profiles!r:.80}")
    return tuple(_durability(profile) for profile in profiles)


def _durability(profile: Any) -> str:
    value = profile.get("durability") if isinstance(profile, dict) else getattr(profile, "durability", None)
    value = getattr(value, "name", value)  # rosbags' QosDurability enum
    if isinstance(value, int) and not isinstance(value, bool) and value in _DURABILITY_NUMBERS:
        return _DURABILITY_NUMBERS[value]
    if isinstance(value, str) and value:
        return value.lower()
    raise ValueError(f"offered_qos_profiles has a profile without a durability: {profile!r:.80}")


def is_tf_static(topic: str, msgtype: str) -> bool:
    return topic.endswith("tf_static") and msgtype == TF_MESSAGE


def latched(topic: str, msgtype: str, durabilities: Optional[Sequence[str]]) -> bool:
    """Whether replay offers the topic TRANSIENT_LOCAL: when every recorded publisher did, as `ros2 bag play`.

    `durabilities` None or empty: the bag recorded no offers (or unreadable ones).
    """
    if not durabilities:
        # A bag without offers (bare MCAP, old recorders) still holds /tf_static from latched static
        # broadcasters, whose listeners subscribe TRANSIENT_LOCAL and would never match a volatile offer.
        return is_tf_static(topic, msgtype)
    return all(durability == TRANSIENT_LOCAL for durability in durabilities)
