"""What each of the policy node's read-only ROS parameters means (`ros2 param describe /vla_policy NAME`).

Three groups, all declared read-only by PolicyNode:
- the robot config, under its YAML keys (`joint_velocity_max`, `workspace.min`, `cameras.agentview.topic`):
  the YAML stays the one source, and limits cannot change under a running safety layer;
- `node.*`: the node's options (PolicyNodeOptions) and the bridge's policy rate;
- `serve_ros.*`: the `vla serve-ros` flags the node was started with (only when started by it).
`use_sim_time` is ROS's own parameter and keeps its usual meaning.
"""

from __future__ import annotations

# Robot config keys; `cameras.<name>.*` share one text per key, with the camera's name filled in.
CONFIG_DESCRIPTIONS: dict[str, str] = {
    "name": "Name of the robot config (its `name:` key), for logs and the operator's eye.",
    "joint_names": "Arm joints the node reads from JointState and commands, in command order.",
    "joint_position_min": "Lower joint position limits (rad), per joint_names entry. Targets are clamped to them "
                          "and every step brakes early enough never to cross them.",
    "joint_position_max": "Upper joint position limits (rad), per joint_names entry. Targets are clamped to them "
                          "and every step brakes early enough never to cross them.",
    "joint_velocity_max": "Largest joint speed (rad/s) a command may ask for, per joint; faster steps are "
                          "limited (velocity_limit intervention).",
    "joint_acceleration_max": "Largest joint acceleration (rad/s^2) between consecutive commands, per joint; "
                              "holds and e-stops also brake within it.",
    "workspace.min": "Lower corner (x, y, z in metres, robot base frame) of the box the tool point and the "
                     "workspace.links must stay in; a step leaving it is held (workspace intervention).",
    "workspace.max": "Upper corner (x, y, z in metres, robot base frame) of the box the tool point and the "
                     "workspace.links must stay in; a step leaving it is held (workspace intervention).",
    "workspace.kinematics": "Model the workspace box is checked with: 'panda' (MuJoCo Panda) or 'none' (no "
                            "workspace check at all, warned at start).",
    "workspace.links": "Bodies of the kinematics model whose origins must stay in the workspace box, besides the "
                       "tool point.",
    "control_rate_hz": "Commands per second (Hz) the control loop publishes; the safety limits apply per period "
                       "of 1/control_rate_hz.",
    "max_observation_age_s": "Oldest age (s) of the oldest input (joint states or any camera) the arm may move "
                             "on; older holds the arm (stale_observation).",
    "max_following_error_rad": "Largest distance (rad, any joint) of the measured pose from the recent commands "
                               "before a following_error fault latches (needs resume).",
    "following_lag_s": "How long (s) the controller may take to reach a command: the window of commands the "
                       "measured pose is compared with.",
    "max_clock_skew_s": "A message stamped further than this (s) ahead of the node's clock is dropped "
                        "(stamp_future_<source>); sync the computers' clocks.",
    "cameras.{camera}.topic": "Image topic of camera '{camera}' (sensor_msgs/Image, or image_transport's "
                              "<topic>/compressed when compressed is true).",
    "cameras.{camera}.height": "Image height (pixels) camera '{camera}' must deliver; other sizes are dropped, "
                               "not resized.",
    "cameras.{camera}.width": "Image width (pixels) camera '{camera}' must deliver; other sizes are dropped, "
                              "not resized.",
    "cameras.{camera}.compressed": "Whether camera '{camera}' is read as sensor_msgs/CompressedImage (jpeg/png) "
                                   "instead of a raw sensor_msgs/Image.",
    "output_mode": "How commands go out: 'joint_trajectory' (one-point JointTrajectory for "
                   "joint_trajectory_controller) or 'forward_position' (Float64MultiArray).",
    "trajectory_stamp": "header.stamp of each JointTrajectory: 'zero' (the controller starts it on receipt) or "
                        "'now' (the node's clock; needs synced clocks).",
    "trajectory_velocities": "Whether each JointTrajectory point carries the commanded velocities (needs the "
                             "controller's allow_nonzero_velocity_at_trajectory_end: true).",
    "topics.joint_states": "sensor_msgs/JointState topic the arm's measured joint positions come from.",
    "topics.instruction": "std_msgs/String topic of the task instruction given to the policy.",
    "topics.instruction_durability": "QoS durability of the instruction subscription: 'volatile' or "
                                     "'transient_local' (latched: a restarted node gets the last instruction).",
    "topics.joint_trajectory": "trajectory_msgs/JointTrajectory topic the commands go to (output_mode "
                               "joint_trajectory).",
    "topics.forward_position": "std_msgs/Float64MultiArray topic the commands go to (output_mode "
                               "forward_position).",
    "topics.emergency_stop": "std_srvs/Trigger service that latches an emergency stop (brake to rest, hold until "
                             "resume).",
    "topics.resume": "std_srvs/Trigger service that releases an e-stop or fault latch and enables motion from the "
                     "measured pose.",
    "topics.enable": "std_srvs/Trigger service that allows motion (refused while latched).",
    "topics.disable": "std_srvs/Trigger service that withdraws the permission to move (brake to rest, hold until "
                      "enable).",
    "gripper.topic": "std_msgs/Float64MultiArray topic the finger position commands go to.",
    "gripper.joint_names": "Finger joints, in the order of the gripper command's entries; also read from "
                           "JointState for the policy's state.",
    "gripper.open_positions": "Finger positions sent to open the gripper, per gripper.joint_names entry.",
    "gripper.closed_positions": "Finger positions sent to close the gripper, per gripper.joint_names entry.",
    "gripper.position_min": "Lower finger joint limits; open and closed positions outside them stop start-up.",
    "gripper.position_max": "Upper finger joint limits; open and closed positions outside them stop start-up.",
    "gripper.close_threshold": "The policy's gripper action (-1 open, +1 close) is compared with this threshold, "
                               "give or take gripper.hysteresis.",
    "gripper.hysteresis": "Band around close_threshold in which the gripper keeps its state, so a signal hovering "
                          "at the threshold cannot make it chatter.",
    "gripper.min_dwell_s": "Least time (s) between two gripper changes.",
}

# PolicyNodeOptions fields (and the bridge's rate), declared as node.<name>.
OPTION_DESCRIPTIONS: dict[str, str] = {
    "policy_rate_hz": "Action rows per second (Hz) in the policy's chunks, resampled to control_rate_hz "
                      "(serve-ros --policy_rate_hz).",
    "finger_joint_names": "Finger joints read into an end-effector policy's state when the config has no "
                          "gripper (gripper.joint_names take precedence).",
    "ensemble_decay": "Temporal ensembling weight exp(-ensemble_decay * i) of the i-th oldest chunk covering a "
                      "tick (ACT's convention: positive favours older predictions).",
    "temporal_ensembling": "Whether overlapping chunks are averaged per tick (ensemble_decay); false plays the "
                           "newest chunk's row.",
    "min_inference_interval_s": "Least time (s) between two inferences (0: back to back), to leave CPU for the "
                                "control loop.",
    "stats_window": "Ticks and inferences kept for the timing statistics (control jitter, inference time).",
    "executor": "rclpy executor of the sensor callbacks: 'single_threaded' or 'events' (the e-stop services "
                "always have their own single-threaded one).",
    "realtime_priority": "SCHED_FIFO priority of the control thread, one less for the callback threads (0: normal "
                         "scheduling; serve-ros --realtime_priority); with inference out of process, the "
                         "inference thread and the policy client's threads two less.",
    "control_slice_us": "Without realtime_priority: the EEVDF time slice (us) the control thread asks for, so it "
                        "preempts a normal task on wake-up sooner (Linux 6.12+; 0: the kernel's default).",
    "freeze_gc": "Whether the node collects once at start and freezes what is alive (gc.freeze), so no full "
                 "garbage collection walks the model and libraries while the control loop waits for the GIL.",
    "status_rate_hz": "How often (Hz) the JSON status goes out on ~/status (0: never).",
}

# `vla serve-ros` flags (vla/config.py ServeRosConfig) the node was started with, declared as serve_ros.<name>.
SERVE_ROS_DESCRIPTIONS: dict[str, str] = {
    "policy": "The policy served: a checkpoint directory, or ws://host:port of a policy server "
              "(serve-ros --policy).",
    "robot": "Path of the robot config YAML the robot parameters come from (serve-ros --robot).",
    "action_space": "What the policy's actions are: 'end_effector_delta' (through the Panda kinematics) or "
                    "'joint' (serve-ros --action_space).",
    "device": "Torch device of a local checkpoint (serve-ros --device).",
    "enable_on_start": "Whether motion was enabled at start without an operator, for simulation only "
                       "(serve-ros --enable_on_start).",
    "inference_process": "Whether a local checkpoint runs in a child process instead of the node's inference "
                         "thread (serve-ros --inference_process).",
}


def config_description(name: str) -> str | None:
    """The description of robot config key `name` (dotted), or None when it has none."""
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "cameras":
        template = CONFIG_DESCRIPTIONS.get(f"cameras.{{camera}}.{parts[2]}")
        return None if template is None else template.format(camera=parts[1])
    return CONFIG_DESCRIPTIONS.get(name)
