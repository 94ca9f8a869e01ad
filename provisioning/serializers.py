import re
from typing import Any

from rest_framework import serializers

from hub.api.fields import StrictCharField, StrictIntegerField, StrictSerializer
from hub.pipeline.models import Step
from hub.pipeline.serializers import JobOutputSerializer
from provisioning import catalog
from provisioning.models import Order, OrderMode, Region, Server, ServerProvider, Tier
from tenants.models import Tenant


class OrderStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = ["name", "kind", "status", "attempts", "error", "started_at", "finished_at", "duration_seconds"]
        read_only_fields = fields


class OrderOutputSerializer(serializers.ModelSerializer):
    steps = serializers.SerializerMethodField()
    tenant: serializers.PrimaryKeyRelatedField[Tenant] = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True
    )
    server: serializers.PrimaryKeyRelatedField[Server] = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True
    )
    # Blank when the order came without one: not an email the schema could promise.
    customer_email = serializers.CharField(read_only=True)
    dns_nameservers = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "status",
            "domain",
            "plan",
            "region",
            "mode",
            "tools",
            "server",
            "tenant",
            "failure_reason",
            "waiting_reason",
            "waiting_since",
            "dns_zone_name",
            "dns_zone_id",
            "dns_nameservers",
            "customer_email",
            "created_at",
            "status_changed_at",
            "fulfilled_at",
            "steps",
        ]
        read_only_fields = fields

    def get_steps(self, order: Order) -> list[dict]:
        if order.job_id is None:
            return []
        assert order.job is not None
        steps = sorted(order.job.steps.all(), key=lambda step: step.position)
        # many=True makes a ListSerializer, whose data is a list; the stubs type it as one object's ReturnDict.
        return OrderStepSerializer(steps, many=True).data  # type: ignore[return-value]


class OrderInputSerializer(serializers.Serializer):
    plan = serializers.ChoiceField(choices=Tier.choices, default=catalog.DEFAULT_PLAN)
    region = serializers.ChoiceField(choices=Region.choices)
    domain = serializers.CharField(max_length=253)
    tools = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(catalog.TOOLS)), max_length=40, default=list
    )
    mode = serializers.ChoiceField(choices=OrderMode.choices, default=OrderMode.AUTO)
    customer_email = serializers.EmailField(required=False, default="")

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in sorted(unknown)})
        errors = catalog.validate_order_request(attrs["plan"], attrs["region"], attrs["domain"], attrs["tools"])
        if errors:
            raise serializers.ValidationError({"order": errors})
        return attrs


class ServerOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Server
        fields = [
            "id",
            "provider",
            "region",
            "tier",
            "ipv4",
            "ssh_port",
            "status",
            "name",
            "provider_id",
            "labels",
            "touched",
            "host_key_recorded_at",
            "contract_start",
            "contract_end",
            "created_at",
        ]
        read_only_fields = fields


class ServerInputSerializer(serializers.Serializer):
    provider = serializers.ChoiceField(choices=ServerProvider.choices, default=ServerProvider.NETCUP)
    region = serializers.ChoiceField(choices=Region.choices)
    tier = serializers.ChoiceField(choices=Tier.choices, default=catalog.DEFAULT_PLAN)
    ipv4 = serializers.IPAddressField(protocol="IPv4")
    ssh_port = serializers.IntegerField(min_value=1, max_value=65535, default=22)
    name = serializers.CharField(max_length=100, required=False, default="")
    # Only when the server does not trust the Hub's key yet; stored encrypted, never shown.
    root_key = serializers.CharField(
        max_length=16384, required=False, default="", write_only=True, trim_whitespace=False
    )
    # A Netcup server's contract (12 months, bought by staff).
    contract_start = serializers.DateField(required=False, allow_null=True, default=None)
    contract_end = serializers.DateField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in sorted(unknown)})
        start, end = attrs.get("contract_start"), attrs.get("contract_end")
        if start and end and end <= start:
            raise serializers.ValidationError({"contract_end": "must be after contract_start"})
        return attrs


# certbot's CERTBOT_DOMAIN (a wildcard's is its base domain) and CERTBOT_VALIDATION (the
# base64url digest of the key authorization).
CHALLENGE_DOMAIN_RE = re.compile(r"^(?:\*\.)?(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)+[a-z]{2,63}\.?$")
CHALLENGE_VALUE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class AcmeChallengeInputSerializer(serializers.Serializer):
    domain = serializers.CharField(max_length=254, help_text="CERTBOT_DOMAIN: the domain being validated")
    validation = serializers.CharField(max_length=128, help_text="CERTBOT_VALIDATION: the TXT value")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name[:64]: "unknown field" for name in sorted(unknown)[:20]})
        domain = attrs["domain"].lower()
        if not CHALLENGE_DOMAIN_RE.match(domain) or len(domain.rstrip(".")) > 253:
            raise serializers.ValidationError({"domain": "not a domain name"})
        if not CHALLENGE_VALUE_RE.match(attrs["validation"]):
            raise serializers.ValidationError({"validation": "not an ACME DNS-01 value (base64url)"})
        return {"domain": domain, "validation": attrs["validation"]}


class AcmeChallengeOutputSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="the TXT record's name, _acme-challenge.<domain>")
    value = serializers.CharField()
    zone = serializers.CharField(help_text="the Cloudflare zone it is in")


class AcmeChallengeRemovedSerializer(serializers.Serializer):
    name = serializers.CharField()
    removed = serializers.IntegerField(help_text="records deleted (0: it was already gone)")


class TenantMigrateInputSerializer(StrictSerializer):
    """Where to: one AVAILABLE server (`server`), or any pool server of a provider."""

    server = StrictIntegerField(required=False, min_value=1)
    provider = serializers.ChoiceField(choices=ServerProvider.choices, required=False)

    def validate_server(self, value: int) -> int:
        if not Server.objects.filter(pk=value).exists():
            raise serializers.ValidationError(f"server {value} does not exist")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("server" in attrs) == ("provider" in attrs):
            raise serializers.ValidationError('give either "server" (an id) or "provider" (e.g. "NETCUP")')
        return attrs


class TenantJobOutputSerializer(serializers.Serializer):
    """A tenant's job as the backup/recover/migrate endpoints answer: the job (poll
    `jobs/{id}/`) and, for a move, its row."""

    tenant = serializers.IntegerField()
    job = JobOutputSerializer()
    move = serializers.IntegerField(allow_null=True)
    kind = serializers.CharField()


class TenantRecoverInputSerializer(StrictSerializer):
    reason = StrictCharField(required=False, max_length=500, allow_blank=True)


class TenantBackupInputSerializer(StrictSerializer):
    """No fields: the tenant's own backup, now."""
