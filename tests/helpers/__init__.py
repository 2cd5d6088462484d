"""Shared test helpers, imported as a package: `from tests.helpers.naive import od_reference`."""
