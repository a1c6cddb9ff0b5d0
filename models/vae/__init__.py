"""Chapter: vae."""
