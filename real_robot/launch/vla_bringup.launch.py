"""ros2 launch file: the simulated arm and the policy node, as `vla ros-bringup` runs them.

    ros2 launch real_robot/launch/vla_bringup.launch.py policy:=outputs/quickstart/train/policy \
        robot:=configs/robot/panda.yaml

UNTESTED: ROS's `launch` package is not installable where this project is developed (it is not
on PyPI), so this file has never been run. `vla ros-bringup` does the same and is tested
(tests/real_robot/test_ros_bringup.py); prefer it unless you need launch's composition.

Both are plain processes (`vla sim-arm`, `vla serve-ros`), not launch_ros Nodes: they are not
ament packages, and they take their options as `--key=value` flags. Run it from the repository
root (the default paths are relative) with the venv's `vla` on PATH, or pass vla:=/path/to/vla.
When either process exits, launch shuts the other down (SIGINT, then SIGTERM after
sigterm_timeout, then SIGKILL). Motion still waits for /vla_policy/enable_motion.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, Shutdown
from launch.substitutions import LaunchConfiguration

ARGUMENTS = {
    # name: (default, description)
    "vla": ("vla", "the vla executable (the venv's)"),
    "robot": ("configs/robot/panda.yaml", "robot config YAML for both processes"),
    "policy": ("outputs/quickstart/train/policy", "policy checkpoint directory, or ws://host:port"),
    "action_space": ("end_effector_delta", "end_effector_delta or joint"),
    "task": ("lift", "robosuite task the sim arm simulates"),
    "image_rate_hz": ("10.0", "sim arm camera rate (Hz)"),
    "inference_process": ("false", "run the checkpoint in a child process of serve-ros"),
    "stop_timeout": ("20", "seconds each process may take to stop before SIGTERM"),
}


def generate_launch_description() -> LaunchDescription:
    arg = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()]
    sim_arm = ExecuteProcess(
        name="sim_arm", output="screen", sigterm_timeout=arg["stop_timeout"],
        cmd=[arg["vla"], "sim-arm", ["--robot=", arg["robot"]], ["--task=", arg["task"]],
             ["--image_rate_hz=", arg["image_rate_hz"]]],
        on_exit=Shutdown(reason="sim-arm exited"))
    policy_node = ExecuteProcess(
        name="vla_policy", output="screen", sigterm_timeout=arg["stop_timeout"],
        cmd=[arg["vla"], "serve-ros", ["--robot=", arg["robot"]], ["--policy=", arg["policy"]],
             ["--action_space=", arg["action_space"]], ["--inference_process=", arg["inference_process"]]],
        on_exit=Shutdown(reason="serve-ros exited"))
    return LaunchDescription([*declared, sim_arm, policy_node])
