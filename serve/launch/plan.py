"""plan(): a pure function from (profile, GPU facts, engine facts, model facts) to a Plan in which
every setting carries its value, where it came from and why. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from serve.errors import Refusal
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts
from serve.launch.knobs import PROFILE_TO_SETTING
from serve.launch.layering import LoadedProfile
from serve.launch.rules import RULES, Ctx, FitReport, Refuse, Rule, Set, SetEnv, Warn

Source = Literal["profile", "override", "default", "rule"]


class PlanRefused(Refusal):
    """plan()'s refusal, with the ids of the rules whose condition held (the refusing ones among them)."""

    def __init__(self, message: str, rules_fired: list[str]) -> None:
        super().__init__(message)
        self.rules_fired = list(rules_fired)


@dataclass
class Decision:
    setting: str
    value: Any
    source: Source
    reason: str
    rule: str | None = None
    issues: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "value": self.value,
            "source": self.source,
            "rule": self.rule,
            "reason": self.reason,
            "issues": list(self.issues),
        }


@dataclass
class Plan:
    profile: str
    decisions: dict[str, Decision]
    env: dict[str, Decision]
    extra_args: list[str]
    warnings: list[str]
    gpu: GpuFacts | None
    engine: EngineFacts
    model: ModelFacts
    kv_cache_intent: str
    memory: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    """Lines for people that are neither decisions nor warnings (e.g. which GPU the plan is for)."""
    rules_fired: list[str] = field(default_factory=list)
    """Ids of the rules whose condition held, in table order (whatever their effect)."""
    readiness: dict[str, Any] | None = None
    """The profile's readiness layer (the sidecar's question and expected answer), for plan.json."""
    profile_choice: dict[str, Any] | None = None
    """What ``--profile auto`` picked and why, for plan.json (serve.launch.profile_choice.Choice.as_dict)."""

    def value(self, setting: str) -> Any:
        decision = self.decisions.get(setting)
        return None if decision is None else decision.value


def _get(obj: Any, dotted: str) -> tuple[Any, bool]:
    """Value at a dotted key and whether it was set explicitly (in a file or an override)."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        obj = getattr(obj, part)
    return getattr(obj, leaf), leaf in obj.model_fields_set


def _initial(loaded: LoadedProfile) -> dict[str, Decision]:
    profile = loaded.profile
    out: dict[str, Decision] = {}
    model = profile.model
    out["model"] = Decision(
        "model",
        model.path or model.id,
        "override" if "model.path" in loaded.overrides or "model.id" in loaded.overrides else "profile",
        "local weights (model.path)" if model.path else "Hugging Face repository (model.id)",
    )
    served = model.served_name or (model.id if model.path else None)
    if served:
        out["served_model_name"] = Decision(
            "served_model_name",
            served,
            "profile",
            "model.served_name"
            if model.served_name
            else "clients keep using model.id while vLLM serves a local path",
        )
    out["kv_cache_dtype"] = Decision("kv_cache_dtype", None, "default", "from serving.kv_cache")
    for key, setting in PROFILE_TO_SETTING:
        value, explicit = _get(profile, key)
        if key == "serving.speculative" and value is not None:
            value = value.model_dump()
        source: Source
        if key in loaded.overrides or any(k.startswith(key + ".") for k in loaded.overrides):
            source, reason = "override", f"{loaded.override_sources.get(key, '--set')} {key}"
        elif explicit:
            source, reason = "profile", f"profile sets {key}"
        else:
            source, reason = "default", f"{key} not set: vLLM's default"
        out[setting] = Decision(setting, value, source, reason)
    return out


def plan(loaded: LoadedProfile, gpu: GpuFacts | None, engine: EngineFacts, model: ModelFacts) -> Plan:
    """Decide every setting. Raises Refusal (with what to change) when the profile cannot work."""
    decisions = _initial(loaded)
    warnings: list[str] = []
    env: dict[str, Decision] = {
        name: Decision(name, value, "profile", "profile sets serving.env")
        for name, value in loaded.profile.serving.env.items()
    }
    ctx = Ctx(
        profile=loaded.profile,
        gpu=gpu,
        engine=engine,
        model=model,
        settings={k: d.value for k, d in decisions.items()},
        inputs=loaded.inputs,
    )
    refusals: list[str] = []
    fired: list[str] = []
    fit: dict[str, Any] | None = None
    for rule in RULES:
        if not rule.when(ctx):
            continue
        fired.append(rule.id)
        for effect in rule.effect(ctx):
            if isinstance(effect, Refuse):
                if not _waived(decisions, rule, effect, warnings):
                    refusals.append(effect.message)
                    ctx.refused = True
            elif isinstance(effect, Warn):
                warnings.append(f"[{rule.id}] {effect.message}")
            elif isinstance(effect, SetEnv):
                _set_env(env, rule, effect, warnings)
            elif isinstance(effect, Set):
                _apply_set(decisions, rule, effect, warnings)
                ctx.settings[effect.setting] = decisions[effect.setting].value
            elif isinstance(effect, FitReport):
                fit = effect.fit
    if refusals:
        more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
        raise PlanRefused(f"profile {loaded.name}: {refusals[0]}{more}", fired)
    return Plan(
        profile=loaded.name,
        decisions=decisions,
        env=env,
        extra_args=list(loaded.profile.serving.extra_args),
        warnings=warnings,
        gpu=gpu,
        engine=engine,
        model=model,
        kv_cache_intent=loaded.profile.serving.kv_cache,
        memory=fit,
        rules_fired=fired,
        readiness=loaded.profile.readiness.model_dump(),
    )


def _apply_set(decisions: dict[str, Decision], rule: Rule, effect: Set, warnings: list[str]) -> None:
    current = decisions.get(effect.setting)
    new = Decision(effect.setting, effect.value, "rule", effect.reason or rule.reason, rule.id, rule.issues)
    if effect.resolves_auto and current is not None and current.value == "auto":
        decisions[effect.setting] = new
        return
    if current is not None and current.source == "rule" and current.value == effect.value:
        # Two rules agree: keep both reasons.
        current.reason = f"{current.reason} Also [{rule.id}]: {rule.reason}"
        current.issues = tuple(dict.fromkeys(current.issues + rule.issues))
        return
    if current is None or current.source in ("default", "rule") or current.value == effect.value:
        if (
            current is not None
            and current.source in ("profile", "override")
            and current.value == effect.value
        ):
            # The profile already agrees with the rule: keep its source, add the rule's reason.
            current.reason = f"{current.reason}; agrees with rule {rule.id}: {rule.reason}"
            current.rule, current.issues = rule.id, rule.issues
            return
        decisions[effect.setting] = new
        _say_cost(rule, warnings)
        return
    issues = f" ({', '.join(rule.issues)})" if rule.issues else ""
    if rule.mode == "adapt" and current.source == "profile":
        warnings.append(
            f"[{rule.id}] changed {effect.setting} from {current.value!r} (profile) to {effect.value!r}: "
            f"{rule.reason}{issues}"
        )
        decisions[effect.setting] = new
        _say_cost(rule, warnings)
        return
    warnings.append(
        f"WARNING [{rule.id}] {effect.setting} = {current.value!r} is set explicitly ({current.source}) and wins, "
        f"but the rule would set {effect.value!r}: {rule.reason}{issues}"
    )
    current.reason = f"{current.reason}; OVERRIDES rule {rule.id}"


def _waived(decisions: dict[str, Decision], rule: Rule, effect: Refuse, warnings: list[str]) -> bool:
    """A refusal is waived when every setting it names in ``waived_by`` was typed on the command line
    (``--set`` / ``SERVE_SET``): the user named the risk. The plan then goes on, loudly."""
    named = [decisions.get(s) for s in effect.waived_by]
    if not named or any(d is None or d.source != "override" for d in named):
        return False
    shown = ", ".join(f"{d.setting} ({d.reason})" for d in named if d is not None)
    warnings.append(f"WARNING [{rule.id}] REFUSAL WAIVED by the explicit {shown}: {effect.message}")
    for d in named:
        if d is not None:
            d.reason = f"{d.reason}; WAIVES refusal of rule {rule.id}"
            d.rule, d.issues = d.rule or rule.id, d.issues or rule.issues
    return True


def _say_cost(rule: Rule, warnings: list[str]) -> None:
    if rule.cost and not any(rule.cost in w for w in warnings):
        warnings.append(f"[{rule.id}] {rule.cost}")


def _set_env(env: dict[str, Decision], rule: Rule, effect: SetEnv, warnings: list[str]) -> None:
    current = env.get(effect.name)
    if current is not None and current.value != effect.value:
        warnings.append(
            f"WARNING [{rule.id}] env {effect.name}={current.value!r} is set by the profile and wins, but the rule "
            f"would set {effect.value!r}: {rule.reason}"
        )
        return
    env[effect.name] = Decision(effect.name, effect.value, "rule", rule.reason, rule.id, rule.issues)
    _say_cost(rule, warnings)
