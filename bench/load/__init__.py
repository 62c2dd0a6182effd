"""Load generators: wrk (closed loop, throughput) and a constant-rate open-loop
generator (latency at a fixed rate, free of coordinated omission)."""
