"""avs_depth_core: metric depth from one camera and binaural chirp echoes (AVS-Net), without ROS."""

__version__ = "0.1.0"
