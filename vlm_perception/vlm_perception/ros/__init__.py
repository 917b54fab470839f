"""The ROS shell: the node and everything that imports rclpy or ROS message types."""
