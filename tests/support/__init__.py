"""Real HTTP peers and clients for the end-to-end tests (loopback only)."""
