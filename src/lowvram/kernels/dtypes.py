"""Plan dtype names -> torch dtypes: one table for the simulator, the runtime and the benchmarks."""

import torch

COMPUTE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # plan names -> torch
STORAGE_DTYPES = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}  # 8-bit weight storage -> torch
