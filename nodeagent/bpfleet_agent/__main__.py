"""``python -m bpfleet_agent``: run the agent daemon."""

from bpfleet_agent.daemon import main

main()
