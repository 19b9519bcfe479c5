"""Checks of each miner: ``defaults`` merged in, its backend (from the backend's description), model,
server, secrets, image and GPUs."""

from __future__ import annotations

import difflib
import re
from typing import Any

from bittensor_wallet.utils import is_valid_ss58_address
from pydantic import ValidationError

from orchestrator.fleet.checks.nodes import PlacementChecks
from orchestrator.fleet.options import BACKEND_GROUPS, Defaults, MinerOptions, MinerSpec
from orchestrator.fleet.resolved import (
    Miner,
    looks_like_secret,
)
from orchestrator.fleet.sections import (
    ENV_NAME_PATTERN,
    ImageName,
)
from orchestrator.policy import RestartPolicy
from services.miner.backends import SPECS
from services.miner.backends.spec import BackendSpec
from services.miner.settings import BACKEND_CHOICES, BackendName


class MinerChecks(PlacementChecks):
    """One miner entry at a time, resolved into a :class:`~orchestrator.fleet.resolved.Miner`."""

    def _resolve(self, spec: MinerSpec, i: int, used_models: dict[str, tuple[int, str]]) -> Miner | None:
        """Merge ``defaults`` into one miner and check it. Returns the miner whenever its wallet and
        backend are known, even with errors, so the checks across miners (ports, hotkeys, files) still
        see it: the fleet is only usable when no error at all was found."""
        options = _merge(self.fleet.defaults, spec)
        if not self._named_wallet_and_backend(spec, options, i):
            return None
        assert options.wallet is not None and options.backend is not None
        backend = options.backend
        self._check_backend_groups(spec, backend, i)
        self._check_one_line(options, i)
        self._check_allowed_hotkeys(spec, i)
        model, server = self._check_backend(spec, options, i, used_models)
        image, gpus = self._check_image(spec, options, backend, i)
        placement = self._place_miner(spec, options, i)
        self._check_node_gpus(
            placement, gpus, ("miners", i, "gpus") if spec.gpus is not None else ("defaults", "gpus")
        )
        axon_port = spec.axon_port if spec.axon_port is not None else self.fleet.port_base + i
        metrics_port = options.metrics_port
        if metrics_port is None and self.fleet.metrics_port_offset is not None:
            metrics_port = axon_port + self.fleet.metrics_port_offset
        return Miner(
            index=i,
            name=spec.name,
            wallet=options.wallet,
            hotkey=spec.hotkey,
            axon_port=axon_port,
            axon_external_port=spec.axon_external_port,
            backend=backend,
            protocols=tuple(options.protocols or ["prompting"]),
            image=image,
            gpus=tuple(gpus),
            model=model,
            model_server=server,
            options=options,
            restart=self._restart_of(options, i),
            placement=placement,
            metrics_port=metrics_port,
        )

    def _named_wallet_and_backend(self, spec: MinerSpec, options: MinerOptions, i: int) -> bool:
        """The miner (or ``defaults``) names a wallet and a backend; each missing one is an error."""
        if options.wallet is None:
            self.error(
                self.miner_at(i),
                f"miner {spec.name!r} has no wallet",
                "set `wallet:` on the miner or under `defaults:`",
            )
        if options.backend is None:
            self.error(
                self.miner_at(i),
                f"miner {spec.name!r} has no backend",
                f"set `backend:` ({BACKEND_CHOICES.rstrip('.')}) on the miner or under `defaults:`",
            )
        return options.wallet is not None and options.backend is not None

    def _check_backend_groups(self, spec: MinerSpec, backend: BackendName, i: int) -> None:
        """No options group of another backend than the miner's."""
        for group in BACKEND_GROUPS:
            if group != backend.value and getattr(spec, group) is not None:
                self.error(
                    self.miner_at(i, group),
                    f"{group} options on a miner whose backend is {backend.value}",
                    f"remove the `{group}:` section, or set backend: {group}",
                )

    def _check_backend(
        self, spec: MinerSpec, options: MinerOptions, i: int, used_models: dict[str, tuple[int, str]]
    ) -> tuple[str | None, str | None]:
        """What the miner's backend needs: one generation at a time in process, a model, a model
        server, its secrets. Returns the model and the model server it uses."""
        backend = options.backend
        assert backend is not None
        model: str | None = None
        server: str | None = None
        described = SPECS[backend]
        group = getattr(options, backend.value)
        if described.in_process and options.max_concurrency is not None and options.max_concurrency > 1:
            self.error(
                self.miner_at(i, "max_concurrency"),
                f"the in-process {backend.value} backend runs one generation at a time",
                "remove max_concurrency; for concurrent streams use backend: openai with a model server",
            )
        if described.needs_model:
            model = group.model if group is not None else None
            if model is None:
                self.error(
                    self.own_at(i, backend.value),
                    f"the {backend.value} miner {spec.name!r} has no model",
                    f"add `{backend.value}: {{model: <a name under models:>}}` to it or to `defaults:`",
                )
            else:
                self._model_ref(model, self.miner_at(i, backend.value, "model"), backend.value, used_models)
        if described.model_server:
            server = self._check_server(described, group, i)
        self._check_secrets(described, group, i)
        return model, server

    def _restart_of(self, options: MinerOptions, i: int) -> RestartPolicy:
        """The fleet's restart policy with the miner's own overrides; bad numbers are errors."""
        restart = self.fleet.restart
        overrides = options.restart.model_dump(exclude_none=True) if options.restart is not None else {}
        try:
            restart = restart.with_overrides(overrides)
        except ValidationError as exc:
            for err in exc.errors():
                message = str((err.get("ctx") or {}).get("error", err["msg"]))
                problem, _, fix = message.rpartition(": ")
                self.error(self.miner_at(i, "restart"), problem or message, fix or "adjust the numbers")
        return restart

    def _check_server(self, described: BackendSpec, group: Any, i: int) -> str | None:
        """A backend that talks to a server names one of the fleet's model servers or gives its own
        address, not both; returns the model server it uses, if any."""
        name, address = described.name, described.address
        wanted = group.model_server if group is not None else None
        own = getattr(group, address, None) if group is not None and address else None
        if wanted is None or wanted is False:
            if own is None:
                self.error(
                    self.own_at(i, name),
                    f"an {name} miner needs a server",
                    f"set `{name}: {{model_server: NAME}}` (one of the fleet's `model_servers:`) "
                    f"or `{name}: {{{address}: http://HOST:PORT/v1}}`",
                )
            return None
        if own is not None:
            self.error(
                self.miner_at(i, name, str(address)),
                f"both {address} and model_server are set",
                "keep one: model_server uses one of the fleet's model servers",
            )
            return None
        return self._server_ref(wanted, self.miner_at(i, name, "model_server"))

    def _check_secrets(self, described: BackendSpec, group: Any, i: int) -> None:
        """A secret is named by its environment variable, never written: check it is a name."""
        for secret in described.secrets:
            name = getattr(group, f"{secret}_env", None) if group is not None else None
            if name is None:
                continue
            where = self.miner_at(i, described.name, f"{secret}_env")
            fix = (
                "put the key in .env (git-ignored) as OPENAI_API_KEY=<key> and write "
                f"`{secret}_env: OPENAI_API_KEY`; revoke the key if this file was shared"
            )
            if looks_like_secret(name):
                self.error(where, "this looks like an API key, not the NAME of an environment variable", fix)
            elif not re.fullmatch(ENV_NAME_PATTERN, name):
                self.error(
                    where,
                    "not a valid environment variable name",
                    "use letters, digits and '_', e.g. OPENAI_API_KEY",
                )

    def _check_image(
        self, spec: MinerSpec, options: MinerOptions, backend: BackendName, i: int
    ) -> tuple[ImageName, list[int]]:
        gpus = list(options.gpus or [])
        self._check_gpus(gpus, ("miners", i, "gpus") if spec.gpus is not None else ("defaults", "gpus"))
        described = SPECS[backend]
        group = getattr(options, backend.value)
        wants_gpu = bool(gpus) or described.wants_gpu(group)
        gpu_image = ImageName(described.gpu_image) if described.gpu_image else None
        derived = gpu_image if wants_gpu and gpu_image else ImageName(described.image)
        image = options.image or derived
        ok = True
        if gpu_image is None and image != derived:
            self.error(
                self.miner_at(i, "image"),
                f"the {backend.value} backend needs the {derived.value} image, not {image.value}",
                f"set image: {derived.value} (or remove image:)",
            )
            ok = False
        elif gpu_image is None and wants_gpu:
            self.error(
                self.miner_at(i, "gpus" if gpus else backend.value),
                f"a GPU {backend.value} miner: the {derived.value} image has no GPU build",
                f"run {backend.value} on the CPU (remove gpus and its GPU settings), "
                "or use llamacpp with image: cuda",
            )
            ok = False
        elif wants_gpu and image != ImageName.cuda:
            setting = described.gpu_settings[0] if described.gpu_settings else "gpus"
            if options.image is not None:
                where = self.miner_at(i, "image")
            elif gpus:
                where = self.miner_at(i, "gpus")
            else:
                where = self.miner_at(i, backend.value, setting)
            self.error(
                where,
                f"a GPU miner (gpus or {setting} set) on the {image.value} image, which has no CUDA",
                f"set image: cuda, or remove gpus and set {backend.value}.{setting}: 0",
            )
            ok = False
        if ok and described.wants_gpu(group) and not gpus:
            setting = described.gpu_settings[0]
            self.error(
                self.miner_at(i, backend.value, setting),
                f"{setting} offloads to a GPU but no gpus are listed",
                "add gpus: [0] (the GPU ids this miner may use)",
            )
            ok = False
        return image, gpus

    def _check_one_line(self, options: MinerOptions, i: int) -> None:
        for key, value in options.model_dump(exclude_none=True).items():
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, item in values:
                if isinstance(item, str) and ("\n" in item or "\r" in item):
                    path = (key,) if sub is None else (key, sub)
                    self.error(
                        self.miner_at(i, *path),
                        "the value has several lines; settings files carry one line per value",
                        "write it on one line",
                    )

    def _check_allowed_hotkeys(self, spec: MinerSpec, i: int) -> None:
        for prefix, hotkeys in (
            ("miners", spec.allowed_hotkeys),
            ("defaults", self.fleet.defaults.allowed_hotkeys),
        ):
            for k, hotkey in enumerate(hotkeys or []):
                if not is_valid_ss58_address(hotkey):
                    where = (
                        self.at("miners", i, "allowed_hotkeys", k)
                        if prefix == "miners"
                        else self.at("defaults", "allowed_hotkeys", k)
                    )
                    self.error(
                        where, f"{hotkey!r} is not an ss58 address", "write the hotkey's ss58 address (5...)"
                    )

    def _server_ref(self, wanted: bool | str, where: tuple[int, str]) -> str | None:
        """The model server an `openai: {model_server: ...}` names (true: the only one), or an error."""
        known = list(self.servers)
        if wanted is True:
            if len(known) == 1:
                return known[0]
            if not known:
                self.error(
                    where,
                    "model_server: true but the fleet defines no model server",
                    "add a top-level `model_servers: {NAME: {model: <a name under models:>}}`, "
                    "or use base_url",
                )
            else:
                self.error(
                    where,
                    f"model_server: true but the fleet has {len(known)} model servers ({', '.join(known)})",
                    f"name the one to use, e.g. model_server: {known[0]}",
                )
            return None
        assert isinstance(wanted, str)
        if wanted in self.servers:
            return wanted
        close = difflib.get_close_matches(wanted, known, n=1, cutoff=0.6)
        if close:
            fix = f"did you mean {close[0]!r}?"
        elif known:
            fix = f"use one of: {', '.join(known)}"
        else:
            fix = "define it under `model_servers:`, e.g. `model_servers: {NAME: {model: gemma}}`"
        self.error(where, f"unknown model server {wanted!r}", fix)
        return None


def _merge(defaults: Defaults, spec: MinerSpec) -> MinerOptions:
    """``defaults`` under the miner's own values; backend groups and restart merge key by key."""
    merged: dict[str, Any] = defaults.model_dump(exclude_none=True)
    own = spec.model_dump(exclude_none=True, exclude={"name", "hotkey", "axon_port", "axon_external_port"})
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return MinerOptions.model_validate(merged)
