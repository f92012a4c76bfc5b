import multiprocessing as mp
import time

from vla.rl.cpu_clock import process_tree_cpu_seconds


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_busy_child_process_is_counted_while_it_runs():
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_child, args=(ready,))
    child.start()
    try:
        assert ready.wait(60), "the child did not finish spinning"
        before_own = time.process_time()
        tree = process_tree_cpu_seconds()
        # the child has spun 0.5 CPU seconds and is still alive (waiting to be joined)
        assert tree - before_own >= 0.4
    finally:
        child.join(30)


def _child(ready) -> None:
    _spin(0.5)
    ready.set()
    time.sleep(2)


def test_its_own_work_is_counted():
    before = process_tree_cpu_seconds()
    _spin(0.2)
    assert process_tree_cpu_seconds() - before >= 0.15
