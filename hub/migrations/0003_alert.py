from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("hub", "0002_reaper_schedule"),
    ]

    operations = [
        migrations.CreateModel(
            name="Alert",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("subject_type", models.CharField(max_length=50)),
                ("subject_id", models.CharField(max_length=64)),
                ("kind", models.CharField(max_length=64)),
                (
                    "severity",
                    models.CharField(
                        choices=[
                            ("SOFT", "soft (dashboard)"),
                            ("MEDIUM", "medium (staff email)"),
                            ("HARD", "hard (staff email + chat)"),
                        ],
                        max_length=10,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("OPEN", "open"), ("RESOLVED", "resolved")], db_index=True, default="OPEN", max_length=10
                    ),
                ),
                ("message", models.TextField()),
                ("count", models.PositiveIntegerField(default=1)),
                ("first_seen_at", models.DateTimeField(auto_now_add=True)),
                ("last_seen_at", models.DateTimeField(auto_now_add=True)),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                ("acknowledged_by", models.CharField(blank=True, default="", max_length=150)),
                ("acknowledged_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["-last_seen_at"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("status", "OPEN")),
                        fields=("subject_type", "subject_id", "kind"),
                        name="alert_one_open_per_subject_kind",
                    )
                ],
            },
        ),
    ]
