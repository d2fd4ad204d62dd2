"""One plan, several targets: the same Plan (after every rule) rendered for engines that serve it on more
than one machine. ``vllm`` is the launcher's own ``vllm serve`` argv (serve.launch.render); the others
are Ray Serve LLM (ray_serve), vLLM production-stack's Helm values (production_stack) and KServe's
LLMInferenceService (kserve). Each maps every engine setting the argv carries, or refuses in one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from serve.targets.common import Rendered

if TYPE_CHECKING:
    from serve.launch.layering import LoadedProfile
    from serve.launch.plan import Plan

TARGETS = ("vllm", "ray-serve", "production-stack", "kserve")

__all__ = ["TARGETS", "Rendered", "render"]


def render(target: str, loaded: LoadedProfile, plan: Plan) -> Rendered:
    """The plan rendered for ``target`` (not ``vllm``: that is serve.launch.render)."""
    from serve.targets import kserve, production_stack, ray_serve

    modules = {"ray-serve": ray_serve, "production-stack": production_stack, "kserve": kserve}
    return modules[target].render(loaded, plan)
