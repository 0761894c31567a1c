"""`slimformer plan`: search recipes of existing steps for the best model on this machine (search.py), over a
grid of levers (space.py), with the Pareto front and report (front.py) and the machine's limits (limits.py)."""
from .search import PlanSettings, run_plan
from .space import Candidate, SearchSpace

__all__ = ["Candidate", "PlanSettings", "SearchSpace", "run_plan"]
