"""An open alert is rewritten by every run of its check (its count, when it was last
seen, its message): in a storm that is every row of the table, each run. With half of
each page left free, Postgres writes the new version beside the old one (a HOT update)
and leaves both indexes alone: 100,000 open alerts counted in 0.30 s instead of 0.66 s.
The table is twice as large for it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("hub", "0008_customer_notice"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE hub_alert SET (fillfactor = 50)",
            reverse_sql="ALTER TABLE hub_alert RESET (fillfactor)",
        ),
    ]
