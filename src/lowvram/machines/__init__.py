"""Descriptions of machines (GPUs) to plan for."""
