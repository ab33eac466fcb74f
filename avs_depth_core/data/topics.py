"""Topic names and message types of the package's interface (README, Nodes and topics), for the bags and the nodes
alike: the one place that spells them. Bags store resolved names ('/camera/...'); nodes subscribe and publish the
relative forms (`relative`), so a namespace or a remapping moves them, except /diagnostics, which is global by
convention."""

IMAGE = "/camera/color/image_raw"
CAMERA_INFO = "/camera/color/camera_info"
DEPTH = "/camera/depth/image"  # ground truth, in datasets and simulation only
POSE = "/camera/pose"  # ground-truth camera pose (geometry_msgs/PoseStamped), simulation only
ECHO = "/audio/echo"
# The camera's attitude and angular velocity (sensor_msgs/Imu), in the camera's optical frame: `avs-depth simulate --imu`;
# read by the cache for Monodepth2's model.pose_prior imu.
IMU = "/imu/data"
# Dynamic synthetic worlds only (`avs-depth simulate --dynamic`), stamped like the image:
INSTANCES = "/camera/instances"  # sensor_msgs/Image 16UC1: object id per pixel, 0 = none
OBJECTS = "/camera/objects"  # avs_depth_msgs/ObjectStates: per object kind, motion, moving flag, pose, residual motion

METRIC_DEPTH = "/avs/metric_depth"
METRIC_DEPTH_INFO = "/avs/metric_depth/camera_info"
PSEUDO_METRIC_DEPTH = "/avs/pseudo_metric_depth"
RELATIVE_DEPTH = "/avs/relative_depth"
SCALE = "/avs/scale"
DIAGNOSTICS = "/diagnostics"

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
ECHO_TYPE = "avs_depth_msgs/msg/EchoStamped"
SCALE_TYPE = "avs_depth_msgs/msg/ScaleEstimate"
OBJECTS_TYPE = "avs_depth_msgs/msg/ObjectStates"
IMU_TYPE = "sensor_msgs/msg/Imu"

SENSOR_TOPICS = {IMAGE: IMAGE_TYPE, CAMERA_INFO: CAMERA_INFO_TYPE, DEPTH: IMAGE_TYPE, ECHO: ECHO_TYPE}

# Bag metadata key holding the sequences (name, split, stamp range) as JSON.
SEQUENCES_KEY = "avs_depth.sequences"


def normalise(topic: str) -> str:
    """Bags store resolved names ('/camera/...'); users may type relative ones ('camera/...')."""
    return topic if topic.startswith("/") else "/" + topic


def relative(topic: str) -> str:
    """The name a node uses for `topic`: relative, so it resolves under the node's namespace and can be remapped."""
    return topic.lstrip("/")
