"""The customer-notice outbox every floor shares: a notice is a row first (its dedup
key says which occasion it is for, so it is written once however often the occasion is
seen), then an email sent by a task after commit. Provisioning (an order rolled back)
and monitoring (the tenant's health) write here; billing keeps its own notices."""
