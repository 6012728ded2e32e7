"""services/memory."""
