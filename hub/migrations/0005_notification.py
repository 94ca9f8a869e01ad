"""Notification moves from monitoring to hub (alerts live whole in hub/alerts); its table
keeps its name."""

import django.db.models.deletion
from django.db import migrations, models



def _move_content_type(apps, model, old, new):  # type: ignore[no-untyped-def]
    # Permissions and admin log entries follow the model instead of pointing at a ghost.
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label=old, model=model).update(app_label=new)


def content_type_to_hub(apps, schema_editor):  # type: ignore[no-untyped-def]
    _move_content_type(apps, "notification", "monitoring", "hub")


def content_type_to_monitoring(apps, schema_editor):  # type: ignore[no-untyped-def]
    _move_content_type(apps, "notification", "hub", "monitoring")


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('monitoring', '0003_notification_covers'),
        ('hub', '0004_alert_status_unindexed'),
    ]

    operations = [
        # The table stays where it is: only Django's idea of which app owns it moves.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Notification',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('channel', models.CharField(choices=[('EMAIL', 'staff email'), ('WEBHOOK', 'chat webhook')], max_length=10)),
                        ('dedup_key', models.CharField(max_length=200, unique=True)),
                        ('status', models.CharField(choices=[('PENDING', 'pending'), ('SENT', 'sent'), ('FAILED', 'failed')], db_index=True, default='PENDING', max_length=10)),
                        ('subject', models.CharField(max_length=300)),
                        ('body', models.TextField()),
                        ('covers', models.PositiveIntegerField(default=1, help_text='alert openings announced: more than 1 is a storm digest')),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('last_error', models.TextField(blank=True, default='')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('last_attempt_at', models.DateTimeField(blank=True, null=True)),
                        ('sent_at', models.DateTimeField(blank=True, null=True)),
                        ('alert', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='notifications', to='hub.alert')),
                    ],
                    options={
                        'db_table': 'monitoring_notification',
                        'ordering': ['-id'],
                    },
                ),
            ],
        ),
        migrations.RunPython(content_type_to_hub, content_type_to_monitoring),
    ]
