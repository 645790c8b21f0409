"""Session backends: native Corral agents and OpenCode."""
