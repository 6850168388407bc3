"""LoRA applied as forward hooks: output += weight x scale x B(A(x)), on any Linear.

The base weight is never touched, so a LoRA works the same on resident, streamed and 8-bit/GGUF
weights and costs no second copy of the model — only its own low-rank factors, which stay on the
device (the plan counts them). File formats (Kohya / A1111, diffusers, PEFT, and the Flux variants
diffusers knows) are read with diffusers' own `lora_state_dict`; we only pair the factors with modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError

# old diffusers attention-processor names -> module names (diffusers side, transformers CLIP side)
_PROC = {"to_q": ("to_q", "q_proj"), "to_k": ("to_k", "k_proj"), "to_v": ("to_v", "v_proj"), "to_out": ("to_out.0", "out_proj")}
COMPONENT_PREFIXES = ("unet.", "transformer.", "text_encoder_2.", "text_encoder.")


@dataclass
class LoraPair:
    component: str  # "unet", "transformer", "text_encoder", ...
    module: str  # module path inside the component (as the file names it)
    down: torch.Tensor  # A: rank x in
    up: torch.Tensor  # B: out x rank
    alpha: float | None


def read_lora(path: str, pipeline_cls) -> list[LoraPair]:
    """Parse a LoRA file in any format diffusers reads for this pipeline class."""
    try:
        out = pipeline_cls.lora_state_dict(path, return_alphas=True) if "return_alphas" in \
            pipeline_cls.lora_state_dict.__code__.co_varnames else pipeline_cls.lora_state_dict(path)
    except (OSError, ValueError, KeyError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"{path} is not a LoRA this model can use ({detail.rstrip(': .')}); it was probably made for "
                        "another architecture.") from None
    sd, alphas = (out if isinstance(out, tuple) else (out, None))
    alphas = alphas or {}
    pairs: dict[tuple[str, str], dict] = {}
    for key, t in sd.items():
        comp, rest = _split_component(key)
        m = re.match(r"(.+?)\.(lora_A|lora_B|lora\.down|lora\.up)\.weight$", rest) or \
            re.match(r"(.+?)_lora\.(down|up)\.weight$", rest)
        if not m:
            if rest.endswith(".alpha"):
                alphas.setdefault(key, t)
            continue
        mod, which = m.group(1), m.group(2)
        if rest.endswith(("_lora.down.weight", "_lora.up.weight")):  # attn1.processor.to_q_lora.down -> attn1.to_q
            mod = mod.replace(".processor.", ".")
            head, _, last = mod.rpartition(".")
            names = _PROC.get(last)
            if names:
                mod = f"{head}.{names[1] if comp.startswith('text_encoder') else names[0]}"
        slot = "down" if which in ("lora_A", "down", "lora.down") else "up"
        pairs.setdefault((comp, mod), {})[slot] = t
        for akey in (key + ".alpha", key.rsplit(".", 2)[0] + ".alpha", f"{comp}.{mod}.alpha"):
            if akey in alphas:
                pairs[(comp, mod)]["alpha"] = float(alphas[akey])
    out_pairs = []
    for (comp, mod), d in pairs.items():
        if "down" in d and "up" in d:
            out_pairs.append(LoraPair(comp, mod, d["down"], d["up"], d.get("alpha")))
    if not out_pairs:
        raise UserError(f"{path} holds no LoRA weights lowvram recognises.")
    return out_pairs


def _split_component(key: str) -> tuple[str, str]:
    for p in COMPONENT_PREFIXES:
        if key.startswith(p):
            return p[:-1], key[len(p):]
    return "unet", key


def _find(module: torch.nn.Module, path: str) -> torch.nn.Module | None:
    for cand in (path, path[len("text_model."):] if path.startswith("text_model.") else "text_model." + path):
        try:
            m = module.get_submodule(cand)
        except AttributeError:
            continue
        if isinstance(m, torch.nn.Linear):
            return m
    return None


def apply_loras(modules: dict[str, torch.nn.Module], loras: list[tuple[str, float]], pipeline_cls,
                device: torch.device, dtype: torch.dtype) -> list:
    """Hook every LoRA onto its Linear layers; returns hook handles. UserError if a LoRA matches nothing
    (it was made for another architecture)."""
    handles = []
    for path, weight in loras:
        pairs = read_lora(path, pipeline_cls)
        matched = 0
        for p in pairs:
            comp = modules.get(p.component) or (modules.get("transformer") if p.component == "unet" else None)
            if comp is None:
                continue
            lin = _find(comp, p.module)
            if lin is None or p.down.shape[1] != lin.in_features or p.up.shape[0] != lin.out_features:
                continue
            rank = p.down.shape[0]
            scale = weight * ((p.alpha / rank) if p.alpha else 1.0)
            down, up = p.down.to(device, dtype), p.up.to(device, dtype)
            handles.append(lin.register_forward_hook(_hook(down, up, scale)))
            matched += 1
        if matched == 0:
            raise UserError(f"{path} does not fit this model: none of its {len(pairs)} LoRA layers matches a layer of it "
                            "(it was made for another architecture).")
    return handles


def _hook(down: torch.Tensor, up: torch.Tensor, scale: float):
    # The factors live where the plan's components compute (the GPU); a component the plan keeps on the
    # CPU gets its own copy of its (small) factors the first time it runs there.
    factors = {down.device: (down, up)}

    def hook(module, args, output):
        x = args[0]
        if x.device not in factors:
            factors[x.device] = (down.to(x.device), up.to(x.device))
        d, u = factors[x.device]
        return output + scale * F.linear(F.linear(x.to(d.dtype), d), u).to(output.dtype)
    return hook
