"""Topic names and message types fixed by the design card (shared/design/architecture.md)."""

IMAGE = "/camera/color/image_raw"
CAMERA_INFO = "/camera/color/camera_info"
DEPTH = "/camera/depth/image"
ECHO = "/audio/echo"

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
ECHO_TYPE = "avs_depth_msgs/msg/EchoStamped"
SCALE_TYPE = "avs_depth_msgs/msg/ScaleEstimate"

SENSOR_TOPICS = {IMAGE: IMAGE_TYPE, CAMERA_INFO: CAMERA_INFO_TYPE, DEPTH: IMAGE_TYPE, ECHO: ECHO_TYPE}

# Bag metadata key holding the sequences (name, split, stamp range) as JSON.
SEQUENCES_KEY = "avs_depth.sequences"


def normalise(topic: str) -> str:
    """Bags store resolved names ('/camera/...'); users may type relative ones ('camera/...')."""
    return topic if topic.startswith("/") else "/" + topic
