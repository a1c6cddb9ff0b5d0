"""Chapter: score."""
