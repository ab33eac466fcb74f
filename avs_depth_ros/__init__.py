"""avs_depth_ros: thin rclpy nodes around avs_depth_core."""
