"""The node agent: probes the kernel, verifies artifacts, loads, attaches and pins them.

It imports ``bpfleet_core`` and nothing else of ours; it meets the API over HTTP.
"""
