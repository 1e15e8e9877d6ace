"""Django's test databases from sqlrs (`runner.py`, the `manage.py test` runner; `databases.py`,
what it and the pytest plugin's Django fixtures do). Its public name is `sqlrs.django`."""
