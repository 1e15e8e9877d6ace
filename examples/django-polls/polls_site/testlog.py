"""Which database each test class ran on (set POLLS_DB_LOG=FILE): one line per class, "PID HOST:PORT/NAME".

The example's integration test reads it to see that parallel workers had databases of their own.
"""

import os

from django.db import connection


def record_database(label):
    path = os.environ.get("POLLS_DB_LOG")
    if path:
        settings = connection.settings_dict
        with open(path, "a") as log:
            log.write(f"{os.getpid()} {settings['HOST']}:{settings['PORT']}/{settings['NAME']} {label}\n")
