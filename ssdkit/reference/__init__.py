"""Readable numpy reference implementations of ssdkit's C++ operators, used by the tests."""
