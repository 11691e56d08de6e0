"""A minimal Django project serving sseproto event streams (see docs/deployment.md)."""
