"""Rosbag tools: reading and replaying bags, reports, the sample bag and the demo."""
