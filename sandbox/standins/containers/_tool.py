#!/usr/bin/python3 -IS
"""The launcher of the client tools of a sandbox database container (psql, pg_dump,
pg_isready, mysql, mysqldump: symlinks to this file in containers/<image family>/),
run by `docker compose exec`; the behaviour is in standin_lib/database.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

from standin_lib.database import main

sys.exit(main())
