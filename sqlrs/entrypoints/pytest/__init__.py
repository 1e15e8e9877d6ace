"""The pytest plugin (entry point `pytest11`: `plugin.py`, its per-process session in `session.py`,
pytest-django's `django_db_setup` in `django_fixtures.py`): a façade over the library."""
