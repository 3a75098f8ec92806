"""Readable numpy reference implementations of ssdkit's operators, used by the tests."""
