"""Real servers for the test suite (and `make demo`), started on free loopback ports.

Each server is a small class with start() and stop(); pytest fixtures in
tests/conftest.py give them session scope. A server that does not come up fails
with its own log instead of hanging.
"""
