"""The ROS-free core: queries, images, frames, engine, grasping, health. Never imports rclpy."""
