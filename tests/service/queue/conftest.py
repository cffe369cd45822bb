"""Fixtures of the queue tests (see queue_factories)."""

from tests.service.queue.queue_factories import clean_queue, queue_db_url

__all__ = ["clean_queue", "queue_db_url"]
