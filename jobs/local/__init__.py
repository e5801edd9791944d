"""The local target: the workloads' jobs, models and endpoints on this machine (see target.py)."""
