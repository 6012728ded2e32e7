"""services/plugins."""
