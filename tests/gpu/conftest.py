"""Registers the ``gpu`` marker here, so these tests need nothing from the project's config."""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA (skipped without it)")
