"""What the launchers share (``campaign.launchers.base``)."""

from __future__ import annotations

from campaign.launchers.base import wait_all


def test_wait_all_waits_for_every_task_and_a_failed_one_does_not_stop_it() -> None:
    waited: list[int] = []

    def get(handle: int) -> int:
        waited.append(handle)
        if handle == 1:
            raise RuntimeError("task 1 was cancelled")
        return handle

    assert wait_all([0, 1, 2], get) is None
    assert waited == [0, 1, 2]
