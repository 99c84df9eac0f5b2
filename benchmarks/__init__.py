"""Side-by-side benchmarks of aiojobs_redis and its peers: ``python -m benchmarks``."""
