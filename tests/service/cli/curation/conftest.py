"""The curation CLI workflows run against the curation database (tests/service/conftest.py): its
`live_api` serves that database, not the session's one that tests/service/cli/conftest.py serves."""

from tests.service.conftest import live_api

__all__ = ["live_api"]
