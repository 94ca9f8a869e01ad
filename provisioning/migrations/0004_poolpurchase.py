"""PoolPurchase moves from monitoring to provisioning (the warm pool is provisioning's);
its table keeps its name."""

import django.db.models.deletion
from django.db import migrations, models



def _move_content_type(apps, model, old, new):  # type: ignore[no-untyped-def]
    # Permissions and admin log entries follow the model instead of pointing at a ghost.
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label=old, model=model).update(app_label=new)


def content_type_to_provisioning(apps, schema_editor):  # type: ignore[no-untyped-def]
    _move_content_type(apps, "poolpurchase", "monitoring", "provisioning")


def content_type_to_monitoring(apps, schema_editor):  # type: ignore[no-untyped-def]
    _move_content_type(apps, "poolpurchase", "provisioning", "monitoring")


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('monitoring', '0003_notification_covers'),
        ('provisioning', '0003_order_dns_zone_and_waiting'),
    ]

    operations = [
        # The table stays where it is: only Django's idea of which app owns it moves.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='PoolPurchase',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('idempotency_key', models.CharField(max_length=100, unique=True)),
                        ('region', models.CharField(max_length=8)),
                        ('tier', models.CharField(max_length=16)),
                        ('status', models.CharField(choices=[('PENDING', 'decided, not bought yet'), ('BOUGHT', 'bought at the provider'), ('STARTED', 'preparation job started'), ('FAILED', 'failed')], db_index=True, default='PENDING', max_length=10)),
                        ('attempts', models.PositiveIntegerField(default=0)),
                        ('error', models.TextField(blank=True, default='')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('server', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='pool_purchase', to='provisioning.server')),
                    ],
                    options={
                        'db_table': 'monitoring_poolpurchase',
                        'ordering': ['-id'],
                    },
                ),
            ],
        ),
        migrations.RunPython(content_type_to_provisioning, content_type_to_monitoring),
    ]
