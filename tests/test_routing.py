"""The cluster's routing rules over replicas' reported plans (no Ray needed): loaded model first, then
the fastest free plan, else wait; a model no replica fits is refused naming the smallest card."""

from lowvram.catalogue import MODELS
from lowvram.cluster.routing import ReplicaState, choose, fits_somewhere, smallest_fitting_card

GiB = 2**30


def _replica(name, seconds=None, loaded=None, busy=False, up=True):
    plans = {"m": {"fits": seconds is not None, "seconds_per_image": seconds or 0}}
    return ReplicaState(name, plans=plans, loaded=loaded, busy=busy, up=up)


def test_a_free_replica_with_the_model_loaded_wins_over_a_faster_one():
    slow_loaded, fast = _replica("a", 9.0, loaded="m"), _replica("b", 1.0)
    assert choose("m", [fast, slow_loaded]) is slow_loaded


def test_else_the_fastest_free_plan_and_never_a_busy_down_or_unfitting_replica():
    reps = [_replica("a", 5.0), _replica("b", 2.0), _replica("c", 1.0, busy=True), _replica("d", 0.5, up=False),
            _replica("e", None)]
    assert choose("m", reps).name == "b"
    assert choose("m", [_replica("c", 1.0, busy=True, loaded="m"), _replica("e", None)]) is None  # waits
    assert fits_somewhere("m", [_replica("d", 0.5, up=False)]) and not fits_somewhere("m", [_replica("e", None)])


def test_the_smallest_card_that_fits_flux_is_named():
    spec = MODELS["flux-dev"]
    small = smallest_fitting_card(spec, {}, 64 * GiB, "lossless")
    tiny_ram = smallest_fitting_card(spec, {}, 1 * GiB, "lossless")
    from lowvram.machines.cards import find_card

    assert small is not None and find_card(small).vram_bytes <= 12 * GiB  # streamed from 64 GB of RAM
    assert tiny_ram is None or find_card(tiny_ram).vram_bytes > find_card(small).vram_bytes
