"""to_host on real autofit model instances and every container kind, with JAX arrays."""

from __future__ import annotations

import logging
import threading
from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from autofit_jaxviz import convert
from autofit_jaxviz.convert import contains_jax, to_host
from autofit_jaxviz.payload import BestFit

jax = pytest.importorskip("jax")
jnp = jax.numpy
af = pytest.importorskip("autofit")
from autofit.example.model import Gaussian  # noqa: E402

Point = namedtuple("Point", "x y")


@dataclass(frozen=True)
class Frozen:
    values: Any
    label: str = "frozen"


@dataclass(frozen=True, slots=True)
class FrozenSlots:
    values: Any


class Light:
    def __init__(self, centre: tuple[float, float] = (0.0, 0.0), intensity: float = 1.0):
        self.centre = centre
        self.intensity = intensity
        self._cache = [centre]  # private state must survive the copy


class Galaxy:
    def __init__(self, redshift: float, light: Light):
        self.redshift = redshift
        self.light = light


def galaxy_model() -> af.Collection:
    light = af.Model(Light)
    light.centre.centre_0 = af.UniformPrior(lower_limit=-1.0, upper_limit=1.0)
    light.centre.centre_1 = af.UniformPrior(lower_limit=-1.0, upper_limit=1.0)
    light.intensity = af.LogUniformPrior(lower_limit=1e-3, upper_limit=1e3)
    return af.Collection(
        galaxy=af.Model(Galaxy, redshift=0.5, light=light),
        gaussians=af.Collection([af.Model(Gaussian), af.Model(Gaussian)]),
    )


_ATOMIC = (type(None), bool, int, float, complex, str, bytes, type, np.generic)


def reachable(obj: Any, seen: dict[int, Any] | None = None) -> dict[int, Any]:
    """Every object reachable from ``obj`` (independent of the code under test)."""
    seen = {} if seen is None else seen
    if isinstance(obj, _ATOMIC) or id(obj) in seen:
        return seen
    seen[id(obj)] = obj
    if isinstance(obj, jax.Array):
        return seen
    children: list[Any] = []
    if isinstance(obj, np.ndarray):
        children = list(obj.ravel()) if obj.dtype == object else []
    elif isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, list | tuple | set):
        children = list(obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        children += list(vars(obj).values())
    for klass in type(obj).__mro__:
        for name in vars(klass).get("__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                children.append(getattr(obj, name))
    for child in children:
        reachable(child, seen)
    return seen


def jax_arrays(obj: Any) -> list[Any]:
    return [o for o in reachable(obj).values() if isinstance(o, jax.Array)]


def mutable_objects(obj: Any) -> set[int]:
    return {
        i for i, o in reachable(obj).items()
        if not isinstance(o, tuple | jax.Array | frozenset)
    }


def nested_payload() -> BestFit:
    model = galaxy_model()
    vector = [jnp.asarray(v) for v in (0.1, -0.2, 3.0, 1.0, 2.0, 0.5, 4.0, 5.0, 0.25)]
    instance = model.instance_from_vector(vector)
    assert isinstance(instance.galaxy.light.centre[0], jax.Array)  # the real thing
    parameters = {
        "instance": instance,
        "list": [jnp.arange(3.0), Point(jnp.ones(2), 1.0)],
        "frozen": Frozen(values=(jnp.zeros(2), "keep")),
        "slots": FrozenSlots(values={"deep": [jnp.full((2, 2), 7.0)]}),
        "numpy": np.arange(4.0),
    }
    return BestFit(log_likelihood=jnp.asarray(-1.5), parameters=parameters, step=3)


def test_every_jax_array_becomes_numpy_in_a_real_autofit_instance() -> None:
    original = nested_payload()
    before = {id(a): a for a in jax_arrays(original)}
    assert len(before) == 14

    host = to_host(original)

    assert jax_arrays(host) == []
    assert not contains_jax(host)
    assert contains_jax(original)
    assert isinstance(host, BestFit)
    assert isinstance(host.log_likelihood, np.floating) and host.log_likelihood == -1.5
    instance = host.parameters["instance"]
    assert isinstance(instance, af.ModelInstance)
    light = instance.galaxy.light
    assert isinstance(light, Light) and isinstance(instance.galaxy, Galaxy)
    assert isinstance(light.centre, tuple)
    assert light.centre == (pytest.approx(0.1), pytest.approx(-0.2))
    assert all(isinstance(c, np.floating) for c in light.centre)
    assert instance.galaxy.redshift == 0.5
    assert light._cache[0] is light.centre  # private attribute kept, sharing preserved
    gaussians = instance.gaussians
    assert [g.centre for g in gaussians] == [1.0, 4.0]  # integer-keyed ModelInstance
    assert isinstance(gaussians[0], Gaussian)
    first, point = host.parameters["list"]
    assert isinstance(first, np.ndarray) and first.tolist() == [0.0, 1.0, 2.0]
    assert type(point) is Point and isinstance(point.x, np.ndarray) and point.y == 1.0
    assert isinstance(host.parameters["frozen"], Frozen)
    assert host.parameters["frozen"].values[1] == "keep"
    deep = host.parameters["slots"].values["deep"][0]
    assert isinstance(deep, np.ndarray) and deep.flags.writeable and (deep == 7).all()

    # The original is untouched: same JAX arrays, in the same places.
    assert {id(a) for a in jax_arrays(original)} == set(before)
    assert isinstance(original.parameters["instance"].galaxy.light.centre[0], jax.Array)
    assert isinstance(original.log_likelihood, jax.Array)
    # ...and the renderer's copy shares no container or object with what the
    # sampler holds; NumPy leaves are shared as they are (to_host converts, it
    # does not snapshot: payloads reach the worker already private)
    shared = mutable_objects(host) & mutable_objects(original)
    assert all(isinstance(reachable(original)[i], np.ndarray) for i in shared)
    assert host.parameters["numpy"] is original.parameters["numpy"]


def test_conversion_survives_autofits_own_pytree_registration() -> None:
    from autofit.jax.pytrees import register_model

    model = galaxy_model()
    register_model(model)  # what a JAX fit does; instance unflatten would drop _cache
    instance = model.instance_from_vector([jnp.asarray(0.3)] * model.prior_count)
    host = to_host(instance)
    assert jax_arrays(host) == []
    assert host.galaxy.light._cache[0] is host.galaxy.light.centre


def test_shared_references_and_cycles_are_preserved() -> None:
    class Node:
        pass

    node = Node()
    node.self = node
    array = jnp.ones(2)
    node.pair = (array, array)
    node.items = [node]
    host = to_host({"a": node, "b": node})
    copy = host["a"]
    assert copy is host["b"] and copy is not node
    assert copy.self is copy and copy.items[0] is copy
    assert copy.pair[0] is copy.pair[1] and isinstance(copy.pair[0], np.ndarray)


def test_uncopyable_registered_pytree_goes_through_flatten_unflatten() -> None:
    @jax.tree_util.register_pytree_node_class
    class Handle:
        def __init__(self, value: Any) -> None:
            self.value = value

        def __reduce_ex__(self, protocol: int) -> Any:
            raise TypeError("Handle cannot be copied")

        def tree_flatten(self) -> tuple[tuple[Any], None]:
            return (self.value,), None

        @classmethod
        def tree_unflatten(cls, aux: None, children: tuple[Any]) -> Handle:
            return cls(*children)

    original = Handle([jnp.arange(2.0)])
    host = to_host(original)
    assert isinstance(host, Handle) and host is not original
    assert isinstance(host.value[0], np.ndarray)
    assert isinstance(original.value[0], jax.Array)


def test_uncopyable_object_is_shared_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert, "_warned_types", set())
    lock = threading.Lock()
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.convert"):
        first = to_host({"lock": lock, "x": np.ones(1)})
        to_host([lock])
    assert first["lock"] is lock
    warnings = [r for r in caplog.records if "cannot copy" in r.getMessage()]
    assert len(warnings) == 1  # once per type per process
    assert "payload['lock']" in warnings[0].getMessage()


def test_keys_object_arrays_and_scalars() -> None:
    key = jax.random.key(0)
    holder = np.empty(2, dtype=object)
    holder[0] = jnp.ones(2)
    holder[1] = "label"
    host = to_host({"key": key, "objects": holder, "scalar": jnp.float32(2.5)})
    assert isinstance(host["key"], np.ndarray) and host["key"].dtype == np.uint32
    assert isinstance(host["objects"][0], np.ndarray) and host["objects"][1] == "label"
    assert isinstance(holder[0], jax.Array)
    assert type(host["scalar"]) is np.float32 and host["scalar"] == 2.5


def test_numpy_only_payload_is_left_equal() -> None:
    payload = BestFit(-2.0, np.arange(3.0), step=0)
    host = to_host(payload)
    assert host.parameters.tolist() == [0.0, 1.0, 2.0]
