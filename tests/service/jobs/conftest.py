"""The API tests' fixtures (tests/service/api/conftest.py): one app on the session's database, a
TestClient, and a token per role."""

from tests.service.api.conftest import *  # noqa: F403 - fixtures, listed in its __all__
