"""The GitOps side of bpfleet: Git -> validate everything -> apply, in a cluster (kopf)
or standalone (straight to the fleet API)."""
