"""Example pipelines shipped with streamprov (the demo among them)."""
