"""Claims, fencing, reaping and task outcomes, on committed rows of a real Postgres."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from service.db.session import transaction
from service.queue.claims import ClaimedTask, claim_tasks
from service.queue.leases import (
    HeldLease,
    LeaseLost,
    backoff_seconds,
    complete_task,
    extend_leases,
    fence_task,
    release_task,
    retry_or_fail_task,
)
from service.queue.reaper import reap_expired_tasks
from tests.service.queue.queue_factories import create_job, event_kinds, job_row, task_row

LEASE = 30.0


def claim(url: str, worker: str, n: int = 1, kinds: tuple[str, ...] = ("generate",)) -> list[ClaimedTask]:
    with transaction(url) as session:
        return claim_tasks(session, worker, list(kinds), n, LEASE)


def expire(url: str, task_id: int) -> None:
    with transaction(url) as session:
        session.execute(
            text("UPDATE task SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": task_id},
        )


def make_runnable(url: str, task_id: int) -> None:
    with transaction(url) as session:
        session.execute(text("UPDATE task SET run_after = now() WHERE id = :id"), {"id": task_id})


def test_concurrent_claimers_never_take_the_same_task(clean_queue: str) -> None:
    url = clean_queue
    _, task_ids = create_job(url, items=240, shard_size=1)  # 240 tasks
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(6)

    def claimer(name: str) -> None:
        mine: list[int] = []
        barrier.wait()
        while True:
            batch = claim(url, name, n=3)
            if not batch:
                break
            mine.extend(t.id for t in batch)
        claimed[name] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    everything = [task_id for ids in claimed.values() for task_id in ids]
    assert len(everything) == len(set(everything)), "a task was claimed twice"
    assert sorted(everything) == sorted(task_ids)
    assert sum(1 for ids in claimed.values() if ids) >= 2, "the claimers did not run concurrently"
    with transaction(url) as session:
        rows = session.execute(text("SELECT worker_id, attempts, lease_token, status FROM task")).all()
    owner_by_task = {task_id: name for name, ids in claimed.items() for task_id in ids}
    assert all(r.status == "running" and r.attempts == 1 and r.lease_token == 1 for r in rows)
    with transaction(url) as session:
        stored: dict[int, str] = dict(session.execute(text("SELECT id, worker_id FROM task")).tuples().all())
    assert stored == owner_by_task


def test_claim_order_kinds_and_owner_running(clean_queue: str) -> None:
    url = clean_queue
    job_id, (first, second) = create_job(url, items=2, shard_size=1)
    with transaction(url) as session:
        session.execute(text("UPDATE task SET priority = 5 WHERE id = :id"), {"id": second})
    assert claim(url, "w", kinds=("train",)) == []
    (task,) = claim(url, "w")
    assert task.id == second  # higher priority first
    assert task.payload == {"item_start": 1, "item_end": 2}
    job = job_row(url, job_id)
    assert job.status == "running"
    assert job.started_at is not None
    assert "claimed" in event_kinds(url, job_id)
    assert [t.id for t in claim(url, "w", n=5)] == [first]


def test_fenced_write_is_rejected_after_the_lease_was_taken(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=4, shard_size=4)
    (stale,) = claim(url, "worker-a")
    expire(url, task_id)
    with transaction(url) as session:
        reaped = reap_expired_tasks(session, backoff_base=0.0)
    assert [(r.id, r.status) for r in reaped] == [(task_id, "queued")]
    (fresh,) = claim(url, "worker-b")
    assert fresh.lease_token == stale.lease_token + 1

    with transaction(url) as session, pytest.raises(LeaseLost, match="reclaimed by worker worker-b"):
        fence_task(session, stale, LEASE)
    with pytest.raises(LeaseLost), transaction(url) as session:
        complete_task(session, stale, LEASE, "worker-a")

    with transaction(url) as session:
        assert fence_task(session, fresh, LEASE) == 0
    row = task_row(url, task_id)
    assert (row.status, row.cursor, row.worker_id) == ("running", 0, "worker-b")
    with transaction(url) as session:
        assert complete_task(session, fresh, LEASE, "worker-b") is True
    assert job_row(url, job_id).status == "succeeded"


def test_reaper_backs_off_then_fails_after_max_attempts(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id, sibling_id) = create_job(url, items=2, shard_size=1, max_attempts=2)
    with transaction(url) as session:  # keep the sibling out of the way: it must be cancelled later
        session.execute(
            text("UPDATE task SET run_after = now() + interval '1 hour' WHERE id = :id"), {"id": sibling_id}
        )

    claim(url, "lost-1")
    expire(url, task_id)
    with transaction(url) as session:
        reaped = reap_expired_tasks(session, backoff_base=60.0)
    assert [r.status for r in reaped] == ["queued"]
    row = task_row(url, task_id)
    assert row.status == "queued"
    assert row.worker_id is None
    assert "lost-1" in (row.last_error or "")
    assert (row.run_after - datetime.now(UTC)).total_seconds() > 30  # backoff: not claimable yet
    assert claim(url, "w2") == []

    make_runnable(url, task_id)
    (second,) = claim(url, "lost-2")
    assert second.attempts == 2
    expire(url, task_id)
    with transaction(url) as session:
        reaped = reap_expired_tasks(session, backoff_base=60.0)
    assert [r.status for r in reaped] == ["failed"]
    row = task_row(url, task_id)
    assert row.status == "failed"
    assert "lost-2" in (row.last_error or "")
    assert "attempt 2 of 2" in (row.last_error or "")
    job = job_row(url, job_id)
    assert job.status == "failed"
    assert "lease expired" in (job.error or "")
    assert task_row(url, sibling_id).status == "cancelled"
    kinds = event_kinds(url, job_id)
    assert kinds.count("requeued") == 1
    assert "failed" in kinds


def test_reaper_leaves_live_leases_alone(clean_queue: str) -> None:
    url = clean_queue
    _, (task_id,) = create_job(url, items=1, shard_size=1)
    claim(url, "alive")
    with transaction(url) as session:
        assert reap_expired_tasks(session, backoff_base=0.0) == []
    assert task_row(url, task_id).status == "running"


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_seconds(5, n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_seconds(5, 40) == 600


def test_retry_then_permanent_failure(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=1, shard_size=1, max_attempts=5)
    (task,) = claim(url, "w")
    with transaction(url) as session:
        status = retry_or_fail_task(
            session,
            task,
            "RuntimeError: flaky",
            permanent=False,
            lease_seconds=LEASE,
            backoff_base=0.0,
            worker_id="w",
        )
    assert status == "queued"
    assert task_row(url, task_id).last_error == "RuntimeError: flaky"
    (task,) = claim(url, "w")
    assert task.attempts == 2
    with transaction(url) as session:
        status = retry_or_fail_task(
            session,
            task,
            "bad teacher config",
            permanent=True,
            lease_seconds=LEASE,
            backoff_base=0.0,
            worker_id="w",
        )
    assert status == "failed"
    row = task_row(url, task_id)
    assert (row.status, row.last_error) == ("failed", "bad teacher config")
    job = job_row(url, job_id)
    assert job.status == "failed"
    assert "bad teacher config" in (job.error or "")
    assert event_kinds(url, job_id).count("retry") == 1


def test_release_makes_the_task_claimable_at_once_without_using_an_attempt(clean_queue: str) -> None:
    url = clean_queue
    job_id, (task_id,) = create_job(url, items=8, shard_size=8)
    (task,) = claim(url, "w1")
    with transaction(url) as session:
        fence_task(session, task, LEASE)
        session.execute(text("UPDATE task SET cursor = 3 WHERE id = :id"), {"id": task_id})
    with transaction(url) as session:
        release_task(session, task, LEASE, "w1")
    row = task_row(url, task_id)
    assert (row.status, row.cursor, row.attempts, row.worker_id) == ("queued", 3, 0, None)
    (again,) = claim(url, "w2")
    assert (again.cursor, again.attempts) == (3, 1)
    assert "released" in event_kinds(url, job_id)


def test_cancelled_task_fails_the_fence_as_cancelled(clean_queue: str) -> None:
    url = clean_queue
    job_id, _ = create_job(url, items=1, shard_size=1)
    (task,) = claim(url, "w")
    with transaction(url) as session:
        session.execute(text("UPDATE job SET status = 'cancelled' WHERE id = :id"), {"id": job_id})
        session.execute(text("UPDATE task SET status = 'cancelled' WHERE job_id = :id"), {"id": job_id})
    with pytest.raises(LeaseLost) as lost, transaction(url) as session:
        fence_task(session, task, LEASE)
    assert lost.value.cancelled


def test_heartbeat_extends_held_leases_and_reports_lost_ones(clean_queue: str) -> None:
    url = clean_queue
    _, (a, b) = create_job(url, items=2, shard_size=1)
    held = claim(url, "hb", n=2)
    with transaction(url) as session:
        session.execute(
            text("INSERT INTO worker (id, hostname, pid, kinds) VALUES ('hb', 'h', 1, ARRAY['generate'])")
        )
        session.execute(text("UPDATE task SET lease_expires_at = now() WHERE id = :id"), {"id": a})
        session.execute(text("UPDATE task SET status = 'cancelled' WHERE id = :id"), {"id": b})
        before = session.execute(text("SELECT heartbeat_at FROM worker WHERE id = 'hb'")).scalar_one()
    with transaction(url) as session:
        still = extend_leases(session, "hb", [HeldLease(t.id, t.lease_token) for t in held], LEASE)
    assert still == {a}
    row = task_row(url, a)
    assert row.lease_expires_at is not None
    assert (row.lease_expires_at - datetime.now(UTC)).total_seconds() > LEASE - 10
    with transaction(url) as session:
        after = session.execute(text("SELECT heartbeat_at FROM worker WHERE id = 'hb'")).scalar_one()
    assert after >= before


def test_job_succeeds_once_when_the_last_two_tasks_finish_together(clean_queue: str) -> None:
    url = clean_queue
    job_id, _ = create_job(url, items=2, shard_size=1)
    tasks = claim(url, "w", n=2)
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def finish(task: ClaimedTask) -> None:
        barrier.wait()
        with transaction(url) as session:
            results.append(complete_task(session, task, LEASE, "w"))

    threads = [threading.Thread(target=finish, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]
    job = job_row(url, job_id)
    assert job.status == "succeeded"
    assert job.finished_at is not None
    assert event_kinds(url, job_id).count("finished") == 1


def test_a_worker_never_reaps_its_own_tasks(clean_queue: str) -> None:
    url = clean_queue
    _, (task_id,) = create_job(url, items=1, shard_size=1)
    claim(url, "slow-heartbeat")
    expire(url, task_id)
    with transaction(url) as session:
        assert reap_expired_tasks(session, backoff_base=0.0, exclude_worker="slow-heartbeat") == []
    assert task_row(url, task_id).status == "running"
    with transaction(url) as session:
        assert [r.id for r in reap_expired_tasks(session, backoff_base=0.0, exclude_worker="other")] == [
            task_id
        ]


def test_api_cancel_waits_for_a_chunk_in_flight_and_never_deadlocks_with_it(clean_queue: str) -> None:
    """A fenced chunk write locks its task, then the job; cancel must take them in the same order."""
    from service.auth import Principal
    from service.jobs.service import cancel_job

    url = clean_queue
    job_id, (task_id,) = create_job(url, items=4, shard_size=4)
    with transaction(url) as session:
        session.execute(text("UPDATE job SET status = 'running' WHERE id = :id"), {"id": job_id})
        session.execute(text("UPDATE task SET status = 'running' WHERE id = :id"), {"id": task_id})
    task_locked, cancel_sent = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def write_chunk() -> None:  # the generate worker's transaction, slowed down between its two locks
        try:
            with transaction(url) as session:
                session.execute(text("UPDATE task SET cursor = 2 WHERE id = :id"), {"id": task_id})
                task_locked.set()
                cancel_sent.wait(10)
                session.execute(text("SELECT pg_sleep(1.5)"))  # longer than Postgres's deadlock_timeout
                session.execute(
                    text("UPDATE job SET items_done = items_done + 2 WHERE id = :id"), {"id": job_id}
                )
        except BaseException as exc:
            failures.append(exc)

    writer = threading.Thread(target=write_chunk)
    writer.start()
    assert task_locked.wait(10)
    threading.Timer(0.2, cancel_sent.set).start()  # cancel_job is blocked by then, or has locked the job
    with transaction(url) as session:
        view = cancel_job(session, job_id, principal=Principal(token_id=0, name="admin", role="admin"))
    writer.join(10)
    assert failures == []  # the worker's write was not chosen as a deadlock victim
    assert view.job.status == "cancelled"
    assert job_row(url, job_id).items_done == 2  # the chunk in flight stays
    assert task_row(url, task_id).status == "cancelled"
