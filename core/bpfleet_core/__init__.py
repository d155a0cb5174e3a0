"""Shared, pure parts of bpfleet: models, signing, ELF analysis, feature checks.

No network, no kernel, no other bpfleet package: everything here runs the same on a
node, in the API, and in a CI job.
"""
