"""rosbag2 I/O, BatVision conversion, the echo-frame pairing rule, datasets and splits."""
