"""Small applications that real server processes run in tests/test_servers.py."""
