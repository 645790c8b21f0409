"""The web console: server-rendered pages for the gateway (`GatewayConsole`) and the fleet
supervisor (`FleetConsole`), at ``/ui/``. See docs/console.md."""
