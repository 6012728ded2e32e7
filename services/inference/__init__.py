"""services/inference."""
