"""pymirror: a traffic-shadowing proxy (Python control plane over a Rust data plane)."""
