"""Small applications that real server processes (tests/servers.py) run in the tests."""
