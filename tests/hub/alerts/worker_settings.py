"""The test worker's settings for the notification tests: mail goes to files in
MONITORING_TEST_MAIL_DIR (the worker is another process: locmem would be invisible)."""

import os

from hub.settings_test import *  # noqa: F403

EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.environ["MONITORING_TEST_MAIL_DIR"]
