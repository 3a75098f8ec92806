"""numpy reference implementations of ssdkit operators, used by the tests."""
