"""Every weight a forward reads must be where the runtime put it.

On a CPU the host copy and the device copy of a weight are the same kind of tensor, so a unit whose
hooks never fire (a ModuleList is never called) or a buffer no unit owns (CLIP's integer position_ids on
a split parent) still computes correctly here and only fails on a GPU ("weight is on cpu"). These tests
catch that on a CPU: structurally for every real-size catalogue component, and at run time by watching
the storages every op reads.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from test_runtime import _inputs, _out
from tiny_pipelines import _module

from lowvram.catalogue import MODELS, build_component
from lowvram.runtime.accountant import BudgetAccountant
from lowvram.runtime.streaming import StreamingEngine, unit_tensors
from lowvram.simulate import SimRequest

COMPONENTS = {c.config: (m, c) for m in MODELS.values() for c in m.components}


@pytest.mark.parametrize("config", sorted(COMPONENTS))
def test_every_tensor_belongs_to_a_callable_unit(config):
    model, comp = COMPONENTS[config]
    module = build_component(comp, "meta")
    groups, _ = unit_tensors(module)
    owned = {id(t) for _, _, _, tensors in groups for *_, t in tensors}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False)):
        assert id(t) in owned, f"{config}: {name} is in no streamable unit, so it never moves to the GPU"
    for name, mod, split_parent, _ in groups:
        if not split_parent:  # a streamed unit is swapped in by its forward hooks: it must be called
            assert not isinstance(mod, (torch.nn.ModuleList, torch.nn.ModuleDict)), f"{config}: unit {name} is never called"


class _Reads(TorchDispatchMode):
    """Records every op that reads one of the `forbidden` storages."""

    def __init__(self, forbidden: dict[int, str]) -> None:
        super().__init__()
        self.forbidden, self.bad = forbidden, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.copy_.default:  # the engine's own host -> device copies
            return func(*args, **(kwargs or {}))
        for t in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                ptr = t.untyped_storage().data_ptr()
                if ptr in self.forbidden:
                    self.bad.append(f"{func} read {self.forbidden[ptr]} from its host copy")
        return func(*args, **(kwargs or {}))


CASES = [("flux-dev", "transformer", SimRequest(batch=1, width=128, height=128, dtype="fp32")),
         ("sdxl", "unet", SimRequest(batch=2, width=64, height=64, dtype="fp32")),
         ("sdxl", "text_encoder_2", SimRequest(batch=1, dtype="fp32")),
         ("sdxl", "text_encoder", SimRequest(batch=1, dtype="fp32")),
         ("flux-dev", "text_encoder_2", SimRequest(batch=1, dtype="fp32")),
         ("sdxl", "vae", SimRequest(op="decode", batch=1, width=64, height=64, dtype="fp32"))]


@pytest.mark.parametrize("model,component,req", CASES, ids=[f"{m}-{c}" for m, c, _ in CASES])
def test_streamed_forward_reads_only_device_copies(model, component, req):
    spec, comp, m = MODELS[model], MODELS[model].component(component), _module(model, component)
    everything = {t.untyped_storage().data_ptr(): n for n, t in
                  list(m.named_parameters(remove_duplicate=False)) + list(m.named_buffers(remove_duplicate=False))}
    eng = StreamingEngine(m, "cpu", 0, BudgetAccountant(1 << 40, "cpu"), owner=component).apply()
    assert eng.streamed, "the test needs streamed units"
    placed = {t.untyped_storage().data_ptr() for u in eng.units if u.resident for *_, t, _ in u.tensors}
    # a host tensor may be read only if it is also its own device copy (resident, on this CPU "device")
    forbidden = {p: n for p, n in everything.items() if p not in placed}
    forbidden.update({t.untyped_storage().data_ptr(): f"{u.name}.{name}" for u in eng.streamed for _, _, name, t, _ in u.tensors})
    fn, kw = _inputs(spec, comp, m, req)
    with torch.no_grad(), _Reads(forbidden) as reads:
        _out(fn(**kw))
        _out(fn(**kw))  # the second call runs on recorded order and prefetch
    eng.remove()
    assert not reads.bad, reads.bad[:5]
