"""Shared fixtures. Real components live in tests/support/ and are registered here."""

pytest_plugins = [
    "tests.support.azurite",
    "tests.support.acr_server",
    "tests.support.registry",
    "tests.support.git_hosts",
]
