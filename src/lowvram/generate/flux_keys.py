"""Black Forest Labs Flux layout -> diffusers FluxTransformer2DModel names.

Hand-written because diffusers' own converter (single_file_utils.convert_flux_transformer_checkpoint_to_
diffusers) hard-codes the 3072 width, so it cannot load any other width (Flux-derived models of other
sizes, and the scaled-down models our tests use). Widths are read from the tensors instead.
"""

from __future__ import annotations

import re

import torch

_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight", "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
}
_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out",
           "norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}
_TOP = {
    "img_in": "x_embedder", "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1", "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1", "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer.linear": "proj_out",
}


def _param(rest: str, table: dict) -> str | None:
    for src, dst in table.items():
        if rest == src:  # a scale tensor mapped to a full name
            return dst
        if rest.startswith(src + "."):
            return dst + rest[len(src):]
    return None


def bfl_flux_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = {k[len("model.diffusion_model."):] if k.startswith("model.diffusion_model.") else k: v for k, v in sd.items()}
    inner = sd["img_in.weight"].shape[0]
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if m := re.match(r"double_blocks\.(\d+)\.(.+)$", k):
            i, rest = m.groups()
            pre = f"transformer_blocks.{i}."
            qkv = re.match(r"(img|txt)_attn\.qkv\.(weight|bias)$", rest)
            if qkv:
                names = ("to_q", "to_k", "to_v") if qkv.group(1) == "img" else ("add_q_proj", "add_k_proj", "add_v_proj")
                for n, part in zip(names, torch.split(v, inner, dim=0)):
                    out[f"{pre}attn.{n}.{qkv.group(2)}"] = part
                continue
            name = _param(rest, _DOUBLE)
        elif m := re.match(r"single_blocks\.(\d+)\.(.+)$", k):
            i, rest = m.groups()
            pre = f"single_transformer_blocks.{i}."
            lin = re.match(r"linear1\.(weight|bias)$", rest)
            if lin:
                mlp = v.shape[0] - 3 * inner
                for n, part in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), torch.split(v, [inner] * 3 + [mlp], dim=0)):
                    out[f"{pre}{n}.{lin.group(1)}"] = part
                continue
            name = _param(rest, _SINGLE)
        else:
            pre = ""
            if k.startswith("final_layer.adaLN_modulation.1."):
                shift, scale = v.chunk(2, dim=0)  # BFL stores (shift, scale); diffusers' AdaLayerNorm wants (scale, shift)
                out["norm_out.linear." + k.rsplit(".", 1)[1]] = torch.cat([scale, shift], dim=0)
                continue
            name = _param(k, _TOP)
        if name is None:
            raise KeyError(f"unexpected Flux tensor {k}")
        out[pre + name] = v
    return out
