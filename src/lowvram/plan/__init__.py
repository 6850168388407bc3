"""The planner: a pure function of (model, workload, machine, policy) -> Plan. No device side effects."""

from ..contract import ComponentPlan, Machine, Plan, Policy, Workload
from .planner import make_plan

__all__ = ["ComponentPlan", "Machine", "Plan", "Policy", "Workload", "make_plan"]
