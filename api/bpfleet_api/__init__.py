"""The central fleet API: desired state per node, rollouts, the agent protocol.

It imports ``bpfleet_core`` and nothing else of ours; agents and the operator meet it
over HTTP.
"""
