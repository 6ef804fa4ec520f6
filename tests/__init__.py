"""The test suite; ``tests`` is a package so that test modules import shared code as ``tests.helpers``."""
