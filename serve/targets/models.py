"""Typed models of the target fields the kit writes, from each target's documented schema. A rendered
document is validated through these before it is printed; fields the kit does not write are not modelled
(``extra="forbid"`` catches a misspelt one). The Kubernetes core kinds inside (PodSpec, EnvVar, probes,
PersistentVolumeClaim) are validated by ``kubernetes-validate`` in tests/targets.

Versions modelled:
- Ray Serve LLM 2.60.0: ``ray.serve.llm.LLMConfig`` and ``LLMServingArgs`` (``build_openai_app``), a
  Serve config file for ``serve run`` / ``serve deploy``.
- vLLM production-stack Helm chart ``vllm-stack`` 0.1.12 (helm/values.schema.json and
  templates/deployment-vllm-multi.yaml at commit a6c01db, 2026-08-05).
- KServe ``serving.kserve.io/v1alpha1`` ``LLMInferenceService`` (pkg/apis/serving/v1alpha1/
  llm_inference_service_types.go and config/llmisvcconfig/config-llm-template.yaml, KServe 0.20: master at
  commit aaac4e2, 2026-08-21, where v1alpha1 is still served and v1alpha2 is the storage version).
The golden renders were also checked once, by hand, against the chart's own values.schema.json and the
CRD's v1alpha1 openAPIV3Schema (config/crd/full/llmisvc/; unknown fields treated as errors): no errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Typed(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Ray Serve LLM 2.60.0 -------------------------------------------------------------------------


class ModelLoadingConfig(Typed):
    model_id: str
    """The name clients send (vLLM's served model name)."""
    model_source: str
    """A Hugging Face id or a directory every node can read."""


class AutoscalingConfig(Typed):
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    initial_replicas: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas > max_replicas")
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas outside [min_replicas, max_replicas]")
        return self


class DeploymentConfig(Typed):
    autoscaling_config: AutoscalingConfig


class RuntimeEnv(Typed):
    env_vars: dict[str, str] = Field(default_factory=dict)


class AcceleratorConfig(Typed):
    kind: Literal["cpu", "gpu"]


class PlacementGroupConfig(Typed):
    bundles: list[dict[str, float]]
    strategy: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"


class RayLLMConfig(Typed):
    model_loading_config: ModelLoadingConfig
    accelerator_config: AcceleratorConfig
    accelerator_type: str | None = None
    placement_group_config: PlacementGroupConfig | None = None
    deployment_config: DeploymentConfig
    engine_kwargs: dict[str, Any]
    runtime_env: RuntimeEnv

    @model_validator(mode="after")
    def _ray_rules(self) -> RayLLMConfig:
        # Ray 2.60 refuses these in engine_kwargs ("use model_loading_config instead").
        for key in ("model", "served_model_name"):
            if key in self.engine_kwargs:
                raise ValueError(f"engine_kwargs.{key} is not allowed: it belongs in model_loading_config")
        if self.accelerator_config.kind == "cpu" and self.accelerator_type:
            raise ValueError("accelerator_type must not be set with accelerator_config.kind cpu")
        return self


class OpenAIAppArgs(Typed):
    llm_configs: list[RayLLMConfig] = Field(min_length=1)


class ServeApplication(Typed):
    name: str
    route_prefix: str = "/"
    import_path: Literal["ray.serve.llm:build_openai_app"]
    args: OpenAIAppArgs


class HttpOptions(Typed):
    host: str
    port: int = Field(ge=1, le=65535)


class RayServeConfig(Typed):
    http_options: HttpOptions
    applications: list[ServeApplication] = Field(min_length=1)


# --- vLLM production-stack chart vllm-stack 0.1.12 -----------------------------------------------


class SecretRef(Typed):
    secretName: str = Field(min_length=1)
    secretKey: str = Field(min_length=1)


class HttpGet(Typed):
    path: str
    port: int | str


class Probe(Typed):
    httpGet: HttpGet
    initialDelaySeconds: int | None = None
    periodSeconds: int | None = None
    failureThreshold: int | None = None


class VllmConfig(Typed):
    tensorParallelSize: int | None = Field(None, ge=1)
    maxModelLen: int | None = Field(None, ge=1)
    dtype: str | None = None
    maxNumSeqs: int | None = Field(None, ge=1)
    gpuMemoryUtilization: float | None = Field(None, gt=0, le=1)
    enablePrefixCaching: bool
    """Always written: the chart 0.1.12 renders ``--no-enable-prefix-caching`` when it is absent or false."""
    extraArgs: list[str] = Field(default_factory=list)


class Keda(Typed):
    enabled: bool
    minReplicaCount: int = Field(ge=0)
    maxReplicaCount: int = Field(ge=1)


class ModelSpec(Typed):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    repository: str
    tag: str
    modelURL: str
    modelRevision: str | None = None
    replicaCount: int = Field(ge=0)
    requestCPU: int = Field(ge=1)
    requestMemory: str
    requestGPU: int = Field(ge=0)
    pvcStorage: str
    vllmConfig: VllmConfig
    env: list[dict[str, Any]] = Field(default_factory=list)
    keda: Keda | None = None


class ServingEngineSpec(Typed):
    containerPort: int = Field(ge=1, le=65535)
    vllmApiKey: SecretRef | None = None
    startupProbe: Probe
    livenessProbe: Probe
    readinessProbe: Probe
    modelSpec: list[ModelSpec] = Field(min_length=1)


class ProductionStackValues(Typed):
    servingEngineSpec: ServingEngineSpec


# --- KServe LLMInferenceService serving.kserve.io/v1alpha1 ----------------------------------------


class LLMModelSpec(Typed):
    uri: str = Field(pattern=r"^(hf|s3|gs|pvc|oci)://.+")
    name: str | None = None


class ParallelismSpec(Typed):
    tensor: int | None = Field(None, ge=1)


class RouterSpec(Typed):
    route: dict[str, Any] | None = None
    gateway: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None


class LLMInferenceServiceSpec(Typed):
    model: LLMModelSpec
    replicas: int | None = Field(None, ge=0)
    parallelism: ParallelismSpec | None = None
    template: dict[str, Any]
    """A core/v1 PodSpec (validated by kubernetes-validate inside a Pod)."""
    router: RouterSpec | None = None


class Metadata(Typed):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)


class LLMInferenceService(Typed):
    apiVersion: Literal["serving.kserve.io/v1alpha1"]
    kind: Literal["LLMInferenceService"]
    metadata: Metadata
    spec: LLMInferenceServiceSpec
