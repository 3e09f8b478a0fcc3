"""What every replica agrees on: runtime namespaces, the planner, signals."""
