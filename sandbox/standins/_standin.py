#!/usr/bin/python3 -IS
"""The launcher of the system-command stand-ins: every executable here but `docker` is
a symlink to this file. The behaviour is in standin_lib/system.py, imported rather
than run as a script so that it loads from cached bytecode, by an isolated interpreter
without site: a setup script calls stand-ins dozens of times, and in the sandbox every
host's calls share this machine's cores."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from standin_lib.system import main

sys.exit(main())
