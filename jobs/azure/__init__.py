"""The Azure ML target: the flow driven through azure-ai-ml (v2) from a stack's outputs (see target.py)."""
