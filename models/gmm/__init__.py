"""Chapter: gmm."""
