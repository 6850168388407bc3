"""lowvram: plan and run heavy open image models on the GPU you already own.

Data flows one way: checkpoint -> model description -> plan -> runtime -> image (+ report).
"""

__version__ = "0.1.0"
