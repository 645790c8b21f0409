"""The fleet supervisor: WebSocket hub, registry, events, commands, policies, cost, alerts, audit."""
