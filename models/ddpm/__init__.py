"""Chapter: ddpm."""
