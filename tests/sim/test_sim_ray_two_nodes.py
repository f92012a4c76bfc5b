"""The Ray backend on a two-node cluster (a head and a second node, both local processes started by
Ray's own test cluster): SPREAD puts one worker on each node, and the episodes are the local ones;
a custom resource only the second node has puts every worker there."""

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from vla.sim import VectorEnv  # noqa: E402
from vla.sim.ray_vector_env import RayVectorEnv, _same  # noqa: E402

STATE_LIFT = {"task": "lift", "cameras": (), "max_episode_steps": 40}


@pytest.fixture
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2, resources={"sim": 2})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.mark.timeout(180)
def test_workers_spread_over_two_nodes_step_the_local_episodes(two_nodes):
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 2, 4, 7)).astype(np.float32)
    with VectorEnv(2, STATE_LIFT) as env:
        local = [env.reset([7, 8])] + [env.step_chunk(a) for a in actions]
    with RayVectorEnv(2, STATE_LIFT, address=two_nodes.address, scheduling="SPREAD", start_timeout_s=60) as env:
        assert len(set(env.worker_nodes())) == 2
        remote = [env.reset([7, 8])] + [env.step_chunk(a) for a in actions]
    assert not ray.is_initialized()  # it connected, so it disconnected
    with RayVectorEnv(2, STATE_LIFT, address=two_nodes.address, resources={"sim": 1}, start_timeout_s=60) as pinned:
        sim_node = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("sim")]
        assert pinned.worker_nodes() == sim_node * 2
    assert all(_same(a, b) for a, b in zip(local[0], remote[0]))
    for got, want in zip(remote[1:], local[1:]):
        for (o1, r1, te1, tr1, i1), (o2, r2, te2, tr2, i2) in zip(got, want):
            assert _same(o1, o2) and (r1, te1, tr1, i1["steps"]) == (r2, te2, tr2, i2["steps"])
