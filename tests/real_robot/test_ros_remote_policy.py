"""The policy node with its policy behind a websocket: PolicyServer (a real tiny FlowVLAPolicy,
tensors made on the server) <- PolicyClient in the node's inference thread <- DDS loopback."""

from __future__ import annotations

import time

import numpy as np
import pytest

try:
    from vla.real_robot.ros_env import import_rclpy

    import_rclpy()
except ImportError as exc:  # the [ros] extra is optional
    pytest.skip(f"rclpy is not importable, install the [ros] extra: {exc}", allow_module_level=True)

from dds_loop import HOME, OFFSET, assert_within_limits, call, running_loop, wait_for  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from tiny_checkpoint import tiny_policy  # noqa: E402

from vla.real_robot.policy_client import PolicyClient, numpy_batch  # noqa: E402
from vla.real_robot.policy_server import PolicyServer  # noqa: E402
from vla.real_robot.serve_policy import numpy_batch_to_torch  # noqa: E402


def test_node_runs_a_remote_policy_and_holds_when_the_server_goes(tmp_path):
    # Joint targets near HOME + OFFSET, then "close the gripper".
    model = tiny_policy(state_dim=7, action_mean=np.append(HOME + OFFSET, 1.0))
    server = PolicyServer(model, host="127.0.0.1", port=0, batch_transform=numpy_batch_to_torch())
    port = server.start()
    client = PolicyClient(f"ws://127.0.0.1:{port}", timeout_s=5.0)
    try:
        with running_loop(tmp_path, client, batch_builder=numpy_batch) as (driver, node):
            for _ in range(3):
                driver.instruction_pub.publish(String(data="lift the cube"))
                time.sleep(0.1)
            assert call(driver, "/vla_policy/enable_motion").success
            wait_for(lambda: len(driver.commands_since(0.0)) > 60, 15.0,
                     f"commands from the remote policy ({node.inference_errors} inference errors)")
            commands = driver.commands_since(0.0)
            assert server.requests_served > 0 and server.errors_replied == 0 and node.inference_errors == 0
            assert_within_limits(node.config, commands)
            assert commands[-1][0] > HOME[0] + 0.05, "joint 1 did not head to the policy's target"
            wait_for(lambda: driver.gripper_since(0.0), 3.0, "a gripper command")
            assert np.array_equal(driver.gripper_since(0.0)[-1], node.config.gripper.closed_positions)

            # The server goes away: inference fails, the buffered chunks run out, the arm brakes and holds.
            server.stop()
            wait_for(lambda: node.inference_errors > 0, 10.0, "inference errors after the server stopped")
            time.sleep(1.0)
            held_at = time.monotonic()
            time.sleep(0.4)
            held = driver.commands_since(held_at)
            assert len(held) > 5 and all(np.array_equal(held[0], q) for q in held), "moved without a policy"
            assert_within_limits(node.config, driver.commands_since(0.0))
            assert all(node.threads.alive)

            # A server back on the same address: the client reconnects and the arm moves again.
            model_q = np.append(HOME - OFFSET, -1.0)  # a different target and "open", to see the new server
            server = PolicyServer(tiny_policy(state_dim=7, action_mean=model_q), host="127.0.0.1", port=port,
                                  batch_transform=numpy_batch_to_torch())
            server.start()
            resumed = time.monotonic()
            wait_for(lambda: (lambda c: len(c) > 5 and not np.array_equal(c[0], c[-1]))(
                driver.commands_since(time.monotonic() - 0.2)), 15.0, "motion after the server came back")
            assert client.reconnects >= 1 and server.requests_served > 0
            wait_for(lambda: any(np.array_equal(g, node.config.gripper.open_positions)
                                 for g in driver.gripper_since(resumed)), 5.0, "the new policy opening the gripper")
            assert_within_limits(node.config, driver.commands_since(0.0))
    finally:
        client.close()
        server.stop()
