"""Checks of the fleet's model servers: their models, images and GPUs."""

from __future__ import annotations

from orchestrator.fleet.checks.nodes import PlacementChecks
from orchestrator.fleet.resolved import (
    LEGACY_MODEL_SERVER,
    ModelServer,
)
from orchestrator.fleet.sections import (
    ImageName,
    LegacyModelServerSpec,
    ModelServerSpec,
)


class ServerChecks(PlacementChecks):
    """The model servers (``model_servers:`` and the older ``model_server:``)."""

    def _check_model_servers(self, used_models: dict[str, tuple[int, str]]) -> dict[str, ModelServer]:
        written: list[tuple[str, ModelServerSpec, tuple[str, ...]]] = [
            (name, spec, ("model_servers", name)) for name, spec in self.fleet.model_servers.items()
        ]
        legacy = self.fleet.model_server
        if legacy is not None and written:
            self.error(
                self.at("model_server"),
                "both `model_server:` and `model_servers:` are set",
                "move it under `model_servers:` (e.g. as `model_servers: {model-server: {...}}`)",
            )
        elif legacy is not None:
            written.append((LEGACY_MODEL_SERVER, legacy, ("model_server",)))
        only_one = len(written) == 1
        servers: dict[str, ModelServer] = {}
        for name, spec, at in written:
            self._model_ref(spec.model, self.at(*at, "model"), "model_server", used_models)
            image = self._check_server_image(spec, at)
            ctx = spec.ctx_per_slot
            if isinstance(spec, LegacyModelServerSpec) and spec.n_ctx is not None:
                if self.doc.has((*at, "ctx_per_slot")):
                    self.error(
                        self.at(*at, "n_ctx"),
                        "both n_ctx and ctx_per_slot are set (n_ctx is the older name of ctx_per_slot)",
                        "keep ctx_per_slot only",
                    )
                ctx = spec.n_ctx
            service = "model-server" if only_one or name == LEGACY_MODEL_SERVER else f"model-server-{name}"
            placement = self._place(spec.node, spec.node_labels, at, at)
            self._check_node_gpus(placement, spec.gpus, (*at, "gpus"))
            servers[name] = ModelServer(name, service, spec, image, ctx, at=at, placement=placement)
        return servers

    def _check_server_image(self, spec: ModelServerSpec, at: tuple[str, ...]) -> ImageName:
        wants_gpu = bool(spec.gpus) or spec.n_gpu_layers != 0
        image = spec.image or (ImageName.cuda if wants_gpu else ImageName.cpu)
        self._check_gpus(spec.gpus, (*at, "gpus"))
        if image == ImageName.hf:
            self.error(self.at(*at, "image"), "a model server runs llama.cpp", "use image cpu or cuda")
        elif wants_gpu and image != ImageName.cuda:
            self.error(
                self.at(*at, "image"),
                f"the model server uses a GPU but its image is {image.value}, which has no CUDA",
                "set image: cuda (or remove gpus and n_gpu_layers)",
            )
        if spec.n_gpu_layers != 0 and not spec.gpus:
            self.error(
                self.at(*at, "n_gpu_layers"),
                "n_gpu_layers offloads to a GPU but no gpus are listed",
                "add gpus: [0] (the GPU ids it may use)",
            )
        return image
