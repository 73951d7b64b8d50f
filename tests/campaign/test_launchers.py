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


class _Reader:
    """Status rows as ``ResultStore.status_rows`` gives them; unreadable for the first ``down`` reads."""

    def __init__(self, down: int) -> None:
        import threading

        self.down = down
        self.back = threading.Event()  # set once a read succeeded

    def status_rows(self, campaign_id: int) -> list[dict[str, int]]:
        if self.down > 0:
            self.down -= 1
            raise ConnectionError("the database is away")
        self.back.set()
        return [{"running": 0, "done": 2, "failed": 0}]


def test_follow_returns_the_rows_and_what_wait_returned_through_a_database_outage() -> None:
    from rich.console import Console

    from campaign.launchers.follow import follow

    reader = _Reader(down=2)
    rows, result = follow(reader, 1, 2, lambda: reader.back.wait(10) and "summaries", Console(quiet=True),
                          poll_s=0.01)
    assert rows == [{"running": 0, "done": 2, "failed": 0}] and result == "summaries"


def test_follow_raises_what_wait_raised() -> None:
    import pytest
    from rich.console import Console

    from campaign.launchers.follow import follow

    def wait() -> None:
        raise RuntimeError("the cluster went away")

    with pytest.raises(RuntimeError, match="went away"):
        follow(_Reader(down=0), 1, 2, wait, Console(quiet=True), poll_s=0.01)
