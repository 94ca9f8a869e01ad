"""Notification and PoolPurchase now belong to hub and provisioning; their tables stay."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('provisioning', '0004_poolpurchase'),
        ('hub', '0005_notification'),
        ('monitoring', '0003_notification_covers'),
    ]

    operations = [
        # The table stays where it is: only Django's idea of which app owns it moves.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name='poolpurchase',
                    name='server',
                ),
                migrations.DeleteModel(
                    name='Notification',
                ),
                migrations.DeleteModel(
                    name='PoolPurchase',
                ),
            ],
        ),
    ]
