"""The worker: lanes (one per queue), leases, execution, maintenance; worker.py conducts them."""
