"""What the business sells, in the words every app shares: regions and tiers (FACTS.md).
Kept on the bottom floor so tenants, provisioning, billing and monitoring can all
name a plan without importing each other."""

from __future__ import annotations

from django.db import models


class Region(models.TextChoices):
    EU = "eu", "eu (Nuremberg)"
    US = "us", "us (Manassas/Ashburn)"


class Tier(models.TextChoices):
    LITE = "lite", "lite (8 GB)"
    BUILD = "build", "build (16 GB)"
    SCALE = "scale", "scale (32 GB)"
    ENTERPRISE = "enterprise", "enterprise (64 GB)"
