from rest_framework import serializers

from hub.pipeline.models import Step
from provisioning import catalog
from provisioning.models import Order, OrderMode, Region, Server, ServerProvider, Tier


class OrderStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = ["name", "kind", "status", "attempts", "error", "started_at", "finished_at", "duration_seconds"]
        read_only_fields = fields


class OrderOutputSerializer(serializers.ModelSerializer):
    steps = serializers.SerializerMethodField()
    tenant = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    server = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    # Blank when the order came without one: not an email the schema could promise.
    customer_email = serializers.CharField(read_only=True)

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
        steps = sorted(order.job.steps.all(), key=lambda step: step.position)
        return OrderStepSerializer(steps, many=True).data


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

    def validate(self, attrs: dict) -> dict:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in sorted(unknown)})
        return attrs
